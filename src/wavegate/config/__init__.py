"""What users write, read and checked: fleet files, app folders, checks files, and their values.

Everything here is pure: it turns text into frozen values or raises an `InputError` that names
the file, the line and the field. Nothing here talks to a cluster or an endpoint.
"""
