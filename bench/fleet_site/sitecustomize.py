"""bench/fleet.py's counters, in the local stack's processes: bench/fleet.py puts this folder on the
``PYTHONPATH`` of the stack it starts, so every Python process of the stack imports this module at start-up.
With ``$LEANOPS_FLEET_TRACE_DIR`` set it acts in two kinds of process, and nowhere else:

- a Lambda worker (``AWS_LAMBDA_FUNCTION_NAME`` and a DynamoDB endpoint): botocore hooks, installed before
  any client exists, append one JSON line per DynamoDB API call to ``<dir>/dynamodb/<pid>.jsonl``: when it
  was sent and answered (``time.time()``: one clock for every process of the machine), the function, the
  operation, the items' keys, the lock owner and fence a lock write names, and the error code if any. A
  botocore retry happens below ``before-call``, so a retried call counts once.
- an isolated processor's child (the worker's environment without the DynamoDB endpoint,
  leanops.isolation): one line in ``<dir>/children.jsonl`` as it starts (a child per topic per worker).

Observes only: anything that goes wrong here is swallowed, never the process's business.
"""

import os

_DIR = os.environ.get("LEANOPS_FLEET_TRACE_DIR")
_FUNCTION = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")

if _DIR and _FUNCTION:
    try:
        import json
        import time

        if os.environ.get("AWS_ENDPOINT_URL_DYNAMODB"):
            import botocore.handlers

            _folder = os.path.join(_DIR, "dynamodb")
            os.makedirs(_folder, exist_ok=True)
            _out = open(os.path.join(_folder, f"{os.getpid()}.jsonl"), "a", buffering=1, encoding="utf-8")  # noqa: SIM115
            _KEY = "leanops-fleet"

            def _value(attribute):  # one DynamoDB attribute value, plainly
                if not isinstance(attribute, dict) or len(attribute) != 1:
                    return None
                kind, value = next(iter(attribute.items()))
                return value if kind in ("S", "N") else None

            def _describe(params):
                """The items a call touches (pk, sk), and for a write of the lock item: what it is, its
                owner and fence (from the request: every owner-checked lock write names both)."""
                updates = [params]
                if "TransactItems" in params:
                    updates = [next(iter(item.values())) for item in params["TransactItems"]]
                items, lock = [], None
                for update in updates:
                    key = update.get("Key") or update.get("Item") or {}
                    pk, sk = _value(key.get("pk")), _value(key.get("sk"))
                    items.append([pk, sk])
                    if sk == "lock" and "UpdateExpression" in update:
                        expression = update["UpdateExpression"]
                        names = set((update.get("ExpressionAttributeNames") or {}).values())
                        values = update.get("ExpressionAttributeValues") or {}
                        if "if_not_exists(#fence" in expression:
                            kind = "acquire"
                        elif "released_at" in names:
                            kind = "commit_release" if "cp" in names else "release"
                        elif "failures" in names:
                            kind = "record_failure"
                        elif "cp" in names:
                            kind = "commit"
                        elif ":lease" in expression:
                            kind = "renew"
                        else:
                            kind = "other"
                        lock = {
                            "kind": kind,
                            "pk": pk,
                            "owner": _value(values.get(":owner")),
                            "fence": _value(values.get(":fence")),
                            "lease": _value(values.get(":lease")),
                        }
                return items, lock

            def _params(params, context, **_):  # the API call's parameters (before-call has the request)
                context[_KEY + "-params"] = params

            def _before(context, model, **_):
                context[_KEY] = (time.time(), model.name, context.pop(_KEY + "-params", {}))

            def _after(http_response, parsed, context, **_):
                started = context.pop(_KEY, None)
                if started is None:
                    return
                sent, operation, params = started
                try:
                    items, lock = _describe(params)
                    record = {
                        "t0": round(sent, 6),
                        "t1": round(time.time(), 6),
                        "fn": _FUNCTION,
                        "op": operation,
                        "items": items,
                        "code": (parsed.get("Error") or {}).get("Code"),
                        "consistent": bool(params.get("ConsistentRead")),
                    }
                    if lock is not None:
                        attributes = parsed.get("Attributes") or {}
                        if lock["kind"] == "acquire" and not record["code"]:
                            lock["fence"] = _value(attributes.get("fence"))
                        record["lock"] = lock
                    _out.write(json.dumps(record) + "\n")
                except Exception:
                    pass

            botocore.handlers.BUILTIN_HANDLERS.append(("before-parameter-build.dynamodb", _params))
            botocore.handlers.BUILTIN_HANDLERS.append(("before-call.dynamodb", _before))
            botocore.handlers.BUILTIN_HANDLERS.append(("after-call.dynamodb", _after))
        else:
            _line = json.dumps({"t": round(time.time(), 6), "pid": os.getpid(), "fn": _FUNCTION})
            with open(os.path.join(_DIR, "children.jsonl"), "a", encoding="utf-8") as _children:
                _children.write(_line + "\n")
    except Exception:  # an observer must never break the process it observes
        pass
