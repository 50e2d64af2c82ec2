"""Build-time helpers of the SAM deployment (``template.yaml``); no Lambda handler imports them.

- :mod:`leanopsctl.deploy.bundle` — the functions' code package: ``functions/`` plus the topics file and its
  processors' packages, so that the cloud runs what runs locally (design §4, "In the cloud"). ``sam build``
  calls it through the root Makefile's ``build-<Function>`` targets.
- :mod:`leanopsctl.deploy.schedules` — each scheduled topic's EventBridge Scheduler schedule, made through
  the Scheduler API by ``leanops topics push`` in the stack's schedule group (no stack resource per topic).
"""
