"""Prints the documents of a YAML stream (e.g. `helm template` output) as one JSON list, with
PyYAML (a parser nobody here wrote); empty documents are dropped."""
import json
import sys

import yaml

with open(sys.argv[1]) as f:
    docs = [doc for doc in yaml.safe_load_all(f) if doc]
json.dump(docs, sys.stdout)
