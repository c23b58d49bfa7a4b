"""Allure results (``allure-results/<uuid>-result.json``): the report's scenarios for an Allure server.

One result per scenario, with its steps, labels (``epic`` = evaluation area, ``story`` = each item,
``parentSuite`` = area, ``suite`` = first item, ``feature``, ``tag``), the failure message, links to
the item's IG rules, and the exchanges the failing check judged attached (redacted JSON, as in the
evidence) to the failing step. UUIDs are derived from the run's start and the scenario id, so
re-rendering the same report gives the same files.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson

from conformance.report.source import ReportSource

__all__ = ["ALLURE_DIR", "allure_results"]

ALLURE_DIR = "allure-results"
_STATUS = {"passed": "passed", "failed": "failed", "skipped": "skipped", "not-run": "skipped"}


def _ms(moment: str) -> int:
    return int(datetime.fromisoformat(moment.replace("Z", "+00:00")).timestamp() * 1000)


def _result(
    scenario: Mapping[str, Any],
    items: Mapping[str, Any],
    start: int,
    run_key: str,
    attachments: list[dict[str, str]],
) -> dict[str, Any]:
    home = next((items[i] for i in scenario["items"] if i in items), None)
    labels = [{"name": "feature", "value": scenario["feature"]}, {"name": "framework", "value": "pytest-bdd"}]
    labels += [{"name": "story", "value": item} for item in scenario["items"]]
    if home is not None:
        labels.append({"name": "epic", "value": home["area"]})
        labels += [{"name": "parentSuite", "value": home["area"]}, {"name": "suite", "value": home["id"]}]
        labels.append({"name": "severity", "value": "blocker" if home["blocking"] else "normal"})
    labels += [{"name": "tag", "value": tag} for tag in scenario["tags"]]
    steps, clock = [], start
    for step in scenario["steps"]:
        stop = clock + int(step["duration_seconds"] * 1000)
        entry: dict[str, Any] = {
            "name": f"{step['keyword']} {step['text']}",
            "status": _STATUS[step["status"]],
            "stage": "finished",
            "start": clock,
            "stop": stop,
        }
        if step["message"]:
            entry["statusDetails"] = {"message": step["message"]}
        if step["status"] == "failed" and attachments:
            entry["attachments"] = attachments
        steps.append(entry)
        clock = stop
    status = "skipped" if scenario["waived"] else scenario["status"]
    message = scenario["failure"] or scenario["skip_reason"] or ""
    links = [
        {"name": link["id"], "url": link["url"], "type": "link"}
        for link in (home or {}).get("ig", {}).get("elements", [])
    ]
    return {
        "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{run_key}/{scenario['id']}")),
        "historyId": hashlib.md5(scenario["id"].encode(), usedforsecurity=False).hexdigest(),
        "fullName": scenario["id"],
        "name": scenario["name"],
        "status": status,
        "statusDetails": {"message": message} if message else {},
        "stage": "finished",
        "start": start,
        "stop": start + int(scenario["duration_seconds"] * 1000),
        "labels": labels,
        "links": links,
        "steps": steps,
    }


def allure_results(source: ReportSource) -> dict[str, bytes]:
    """File name → content of every Allure result file of the report."""
    report = source.report
    items = {item["id"]: item for item in report["items"]}
    clock = _ms(report["run"]["started"])
    run_key = f"vaccicard-conformance/{report['run']['started']}"
    files = {}
    for scenario in report["scenarios"]:
        attachments = []
        for exchange_id in scenario.get("failed_evidence", []):
            exchange = source.exchanges.get(exchange_id)
            if exchange is None:
                continue
            key = f"{run_key}/{scenario['id']}/{exchange_id}"
            name = f"{uuid.uuid5(uuid.NAMESPACE_URL, key)}-attachment.json"
            files[name] = orjson.dumps(exchange.to_json(), option=orjson.OPT_INDENT_2, default=str)
            title = f"exchange {exchange_id}: {exchange.method} {exchange.path}"
            attachments.append({"name": title, "source": name, "type": "application/json"})
        result = _result(scenario, items, clock, run_key, attachments)
        files[f"{result['uuid']}-result.json"] = orjson.dumps(result, option=orjson.OPT_INDENT_2)
        clock = result["stop"]
    return files
