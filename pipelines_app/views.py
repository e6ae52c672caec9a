from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.urls import reverse

from pipelines_app import selectors
from pipelines_app.models import PipelineRun, PipelineStep

NODE_W, NODE_H, GAP_X, GAP_Y, PAD = 170, 58, 60, 24, 10


def _link(step: PipelineStep) -> str:
    """The page of the object the step made (the dataset version, job, evaluation, or the exported model)."""
    out = step.outputs
    if step.type == "prepare" and out.get("dataset"):
        return reverse("datasets:detail", args=[out["dataset"]])
    if step.type == "train" and out.get("job"):
        return reverse("jobs:detail", args=[out["job"]])
    if step.type == "evaluate" and out.get("evaluation"):
        return reverse("models:evaluation", args=[out["evaluation"]])
    if step.type == "export" and out.get("model"):
        return reverse("models:detail", args=[out["model"]])
    return ""


def dag_layout(steps: list[PipelineStep]) -> dict:
    """A layered drawing of the steps: each in the column after its deepest need, edges from need to step."""
    by_id = {s.step_id: s for s in steps}
    depth: dict[str, int] = {}

    def layer(step_id: str) -> int:
        if step_id not in depth:
            depth[step_id] = 1 + max((layer(n) for n in by_id[step_id].needs), default=-1)
        return depth[step_id]

    rows: dict[int, int] = {}
    nodes = {}
    for step in steps:
        column = layer(step.step_id)
        row = rows.get(column, 0)
        rows[column] = row + 1
        nodes[step.step_id] = {"step": step, "x": PAD + column * (NODE_W + GAP_X), "y": PAD + row * (NODE_H + GAP_Y),
                               "link": _link(step)}
    edges = [{"x1": nodes[n]["x"] + NODE_W, "y1": nodes[n]["y"] + NODE_H // 2, "x2": node["x"],
              "y2": node["y"] + NODE_H // 2} for node in nodes.values() for n in node["step"].needs]
    width = PAD * 2 + (max(depth.values(), default=0) + 1) * (NODE_W + GAP_X) - GAP_X
    height = PAD * 2 + max(rows.values(), default=1) * (NODE_H + GAP_Y) - GAP_Y
    return {"nodes": list(nodes.values()), "edges": edges, "width": width, "height": height, "node_w": NODE_W,
            "node_h": NODE_H}


@login_required
def pipeline_list(request):
    return render(request, "pipelines_app/pipeline_list.html",
                  {"pipelines": selectors.pipelines_visible_to(request.user).prefetch_related("runs")[:100]})


@login_required
def pipeline_detail(request, pipeline_id: str):
    pipeline = selectors.pipeline_get(request.user, pipeline_id)
    runs = list(pipeline.runs.all()[:20])
    chosen = request.GET.get("run")
    run = next((r for r in runs if r.id == chosen), runs[0] if runs else None)
    steps = list(run.steps.all()) if run else []
    context = {"pipeline": pipeline, "runs": runs, "run": run, "steps": steps, "dag": dag_layout(steps),
               "live": run is not None and run.status == PipelineRun.Status.RUNNING}
    if request.htmx:
        return render(request, "pipelines_app/partials/run_dag.html", context)
    return render(request, "pipelines_app/pipeline_detail.html", context)
