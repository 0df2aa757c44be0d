"""Which weights ran, as table rows: the model identities a run recorded (safealign.models.identity).

Runs from before identities were recorded have none; they get no rows, never a guess.
"""

from __future__ import annotations

from typing import Any

from safealign.report.load import RunData

COLUMNS = ("part of the run", "model", "source", "weights fingerprint")
CAPTION = ("Fingerprint: sha256 over the weight files' sha256 (for tiny-random and models not loaded from files: "
           "over the parameters). An adapter's source names the base model it was trained on.")  # fmt: skip


def identity_rows(data: RunData) -> list[tuple[str, str, str, str]]:
    """One row per recorded identity: the demo's base model, each training run's start and result, each evaluation."""
    found: list[tuple[str, Any]] = [("base model", data.demo_summary and data.demo_summary.model_identity)]
    for run in data.trainings:
        summary = run.summary or {}
        found += [(f"training {run.name}: start", summary.get("model_identity")),
                  (f"training {run.name}: reference", summary.get("reference_identity")),
                  (f"training {run.name}: result", summary.get("final_identity"))]  # fmt: skip
    for stage in data.stages:
        found.append((f"evaluation {stage.name}", stage.jailbreak_summary and stage.jailbreak_summary.model_identity))
    return [(part, *identity_cells(identity)) for part, identity in found if isinstance(identity, dict)]


def identity_cells(identity: dict[str, Any]) -> tuple[str, str, str]:
    """(model, source, fingerprint) as plain text; the renderers escape it."""
    model = f"{identity.get('spec', '?')} ({identity.get('kind', '?')})"
    return model, _source(identity), str(identity.get("fingerprint") or "—")


def _source(identity: dict[str, Any]) -> str:
    kind = identity.get("kind")
    if kind == "builtin":
        source = str(identity.get("source") or "not fetched")
        if identity.get("wheel_sha256"):
            return f"{source}, wheel sha256 {identity['wheel_sha256']}, GGUF sha256 {identity.get('gguf_sha256')}"
        return f"{source}, revision {identity.get('revision') or 'not recorded'}"
    if kind == "hub":
        return f"hub {identity.get('hub_id')} at revision {identity.get('revision') or 'unknown (not in the cache)'}"
    if kind == "adapter":
        base = identity.get("base") if isinstance(identity.get("base"), dict) else {}
        model, source, fingerprint = identity_cells(base)
        return f"{identity.get('path')} on base {model}: {source}, weights {fingerprint}"
    if kind == "tiny":
        return f"random initialisation, seed {identity.get('seed')}"
    if kind == "remote":
        return f"{identity.get('backend')} endpoint (weights not visible)"
    return str(identity.get("path") or identity.get("class") or "not recorded")
