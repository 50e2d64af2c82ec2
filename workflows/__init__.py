"""Build-time sources of the Step Functions state machines, one module per machine.

Each module defines its machine with the AWS Step Functions Data Science SDK and renders it as Amazon
States Language; ``python -m workflows`` (``make asl``) writes ``statemachines/<name>.asl.json``, which is
committed, reviewed and deployed by ``template.yaml``. The SDK (``workflows/requirements.txt``) is a
build-time dependency only: nothing under ``functions/`` imports this package, and importing the package
itself does not import the SDK.
"""
