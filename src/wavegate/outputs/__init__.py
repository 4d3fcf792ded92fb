"""What a run leaves for people and machines: the report, the journal, JUnit, the CI step summary,
the live table and the log lines. None of them decides anything."""
