#!/usr/bin/env python3
"""Prints the Library App's manifests for CLUSTER and VERSION, as a chart renderer would.

FAULT `render-fails` makes it fail the way a broken chart does: a message on stderr, exit 1.
"""
import sys

cluster, version, fault = sys.argv[1:4]
if fault == "render-fails":
    sys.stderr.write("walking chart\nError: template: library/templates/deployment.yaml:7: "
                     "function \"nope\" not defined\n")
    sys.exit(1)
print(f"""\
apiVersion: v1
kind: ConfigMap
metadata:
  name: library-app
  annotations: {{note: "${{left.as.written}}"}}
data:
  LIBRARY_CLUSTER: "{cluster}"
  LIBRARY_REGION: "rendered"
---
apiVersion: v1
kind: Service
metadata:
  name: library-app
  annotations: {{wavegate.dev/ingress: "true"}}
spec:
  selector: {{app: library-app}}
  ports:
    - {{name: http, port: 80, targetPort: http, protocol: TCP}}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: library-app
  labels: {{app: library-app}}
spec:
  replicas: 2
  selector:
    matchLabels: {{app: library-app}}
  template:
    metadata:
      labels: {{app: library-app}}
    spec:
      containers:
        - name: library-app
          image: library-app:{version}
          ports:
            - {{name: http, containerPort: 8080, protocol: TCP}}
          envFrom:
            - configMapRef: {{name: library-app}}
          env:
            - name: LIBRARY_TOKEN_ALICE
              valueFrom: {{secretKeyRef: {{name: library-tokens, key: alice}}}}
            - name: LIBRARY_TOKEN_BOB
              valueFrom: {{secretKeyRef: {{name: library-tokens, key: bob}}}}
            - name: LIBRARY_TOKEN_CAROL
              valueFrom: {{secretKeyRef: {{name: library-tokens, key: carol}}}}
          readinessProbe:
            httpGet: {{path: /healthz, port: http}}
            periodSeconds: 1""")
