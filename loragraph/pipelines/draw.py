"""Drawing a pipeline: Mermaid text for docs and a PNG for people (pure Python, no graphviz).

- ``to_mermaid(spec)``: a ``flowchart TD``; nodes show stage name, kind and adapter;
  guardrail stages are hexagons with their own style; edges carry their conditions
  (``intent.label in [complaint, refund_request]``), default edges are dotted ``else``.
- ``draw_png(spec, path)``: the same picture drawn with matplotlib on a layered layout
  (stages by their depth from the entry, edges top to bottom). Works on a spec that fails
  validation too (edges to unknown stages are left out), so a broken pipeline can be looked at.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import networkx as nx

from loragraph.pipelines.spec import EdgeSpec, PipelineSpec, StageSpec

__all__ = ["KIND_COLORS", "draw_png", "layers", "to_mermaid", "write_drawings"]

KIND_COLORS: dict[str, tuple[str, str]] = {
    "classify": ("#dbeafe", "#1d4ed8"),
    "tag": ("#dcfce7", "#15803d"),
    "generate": ("#fef3c7", "#b45309"),
    "guardrail": ("#fee2e2", "#b91c1c"),
}
"""Fill and border colour of each stage kind (Mermaid and PNG)."""


def _mermaid_text(text: str) -> str:
    # quotes end a label, `<` would open HTML, `|` ends an edge label; `>` is harmless
    return text.replace('"', "#quot;").replace("<", "#lt;").replace("|", "#124;")


def _threshold_text(stage: StageSpec) -> str:
    text = f"{stage.threshold:g}" if stage.threshold is not None else "stored threshold"
    if stage.review_threshold is not None:
        text += f" · escalate ≥ {stage.review_threshold:g}"
    return text


def _node_text(name: str, stage: StageSpec) -> str:
    extra = ""
    if stage.kind == "guardrail":
        target = "input" if stage.target == "input" else stage.target
        extra = f"<br/>checks {target} · {stage.policy} ≥ {_threshold_text(stage)}"
    return f"<b>{_mermaid_text(name)}</b><br/>{stage.kind} · {_mermaid_text(stage.adapter)}{extra}"


def _valid_edges(spec: PipelineSpec) -> list[EdgeSpec]:
    return [e for e in spec.edges if e.from_ in spec.stages and e.to in spec.stages]


def to_mermaid(spec: PipelineSpec) -> str:
    """A Mermaid ``flowchart TD`` of the pipeline (node ids are ``s_<stage>``)."""
    lines = [
        "flowchart TD",
        f"  %% pipeline {spec.name}: base {spec.base.name} ({spec.base.quantization})",
    ]
    lines.append("  start((start))")
    for name, stage in spec.stages.items():
        text = _node_text(name, stage)
        if stage.kind == "guardrail":
            lines.append(f'  s_{name}{{{{"{text}"}}}}')
        else:
            lines.append(f'  s_{name}["{text}"]')
    if spec.entry_stage in spec.stages:
        lines.append(f"  start --> s_{spec.entry_stage}")
    for edge in _valid_edges(spec):
        label = _mermaid_text(edge.label())
        arrow = "-.->" if edge.default else "-->"
        if label:
            lines.append(f'  s_{edge.from_} {arrow}|"{label}"| s_{edge.to}')
        else:
            lines.append(f"  s_{edge.from_} {arrow} s_{edge.to}")
    for kind, (fill, stroke) in KIND_COLORS.items():
        width = "3px" if kind == "guardrail" else "1px"
        lines.append(
            f"  classDef {kind} fill:{fill},stroke:{stroke},stroke-width:{width},color:#111"
        )
        members = [f"s_{n}" for n, s in spec.stages.items() if s.kind == kind]
        if members:
            lines.append(f"  class {','.join(members)} {kind}")
    return "\n".join(lines) + "\n"


def layers(spec: PipelineSpec) -> list[list[str]]:
    """Stages grouped by depth from the entry (longest path; file order within a layer).

    Stages not reached from the entry come last, in a layer of their own.
    """
    graph = nx.DiGraph()
    graph.add_nodes_from(spec.stages)
    graph.add_edges_from((e.from_, e.to) for e in _valid_edges(spec))
    entry = spec.entry_stage
    depth: dict[str, int] = {}
    if entry in graph:
        reached = {entry} | nx.descendants(graph, entry)
        sub = graph.subgraph(reached)
        if nx.is_directed_acyclic_graph(sub):
            for node in nx.topological_sort(sub):
                preds = [depth[p] for p in sub.predecessors(node) if p in depth]
                depth[node] = max(preds) + 1 if preds else 0
        else:
            depth = dict(nx.single_source_shortest_path_length(sub, entry))
    result: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    rest: list[str] = []
    for name in spec.stages:
        if name in depth:
            result[depth[name]].append(name)
        else:
            rest.append(name)
    if rest:
        result.append(rest)
    return result


def draw_png(spec: PipelineSpec, path: str | Path, *, dpi: int = 150) -> Path:
    """Draw the pipeline as a PNG at ``path`` (matplotlib, headless); return the path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, RegularPolygon

    rows = layers(spec)
    box_w, box_h, gap_x, gap_y = 3.0, 1.05, 0.9, 1.6
    widest = max(len(r) for r in rows)
    pos: dict[str, tuple[float, float]] = {}
    for depth, row in enumerate(rows):
        offset = (widest - len(row)) * (box_w + gap_x) / 2
        for i, name in enumerate(row):
            pos[name] = (offset + i * (box_w + gap_x) + box_w / 2, -depth * (box_h + gap_y))
    width = widest * (box_w + gap_x)
    height = len(rows) * (box_h + gap_y)
    fig, ax = plt.subplots(figsize=(max(6.0, width * 0.95), max(3.5, height * 0.95 + 0.8)))
    ax.set_xlim(-0.3, width + 0.3 - gap_x)
    ax.set_ylim(-(len(rows) - 1) * (box_h + gap_y) - box_h, box_h + 0.2)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(
        f"{spec.name}  ·  base {spec.base.name} ({spec.base.quantization})",
        fontsize=11,
        fontweight="bold",
        loc="left",
    )

    for name, stage in spec.stages.items():
        x, y = pos[name]
        fill, stroke = KIND_COLORS[stage.kind]
        guard = stage.kind == "guardrail"
        patch = FancyBboxPatch(
            (x - box_w / 2, y - box_h / 2),
            box_w,
            box_h,
            boxstyle="round,pad=0.02,rounding_size=0.18"
            if not guard
            else "sawtooth,pad=0.02,tooth_size=0.08",
            facecolor=fill,
            edgecolor=stroke,
            linewidth=2.4 if guard else 1.4,
            zorder=2,
        )
        ax.add_patch(patch)
        if name == spec.entry_stage:
            ax.add_patch(
                RegularPolygon(
                    (x - box_w / 2 + 0.16, y + box_h / 2 - 0.16),
                    3,
                    radius=0.1,
                    orientation=-1.5708,
                    color=stroke,
                    zorder=3,
                )
            )
        detail = f"{stage.kind} · {stage.adapter}"
        if guard:
            detail += f"\n{stage.policy} if ≥ {_threshold_text(stage)} on {stage.target}"
        ax.text(
            x, y + 0.17, name, ha="center", va="center", fontsize=10.5, fontweight="bold", zorder=3
        )
        ax.text(x, y - 0.2, detail, ha="center", va="center", fontsize=8.5, color="#333", zorder=3)

    for edge in _valid_edges(spec):
        (x0, y0), (x1, y1) = pos[edge.from_], pos[edge.to]
        rad = 0.0 if abs(x1 - x0) < 1e-6 or y0 - y1 <= box_h + gap_y + 1e-6 else 0.18
        if abs(y1 - y0) < 1e-6:  # same layer (only in cyclic pipelines): side to side
            sign = 1 if x1 > x0 else -1
            start, end = (x0 + sign * box_w / 2, y0), (x1 - sign * box_w / 2, y1)
        elif y1 > y0:  # a back edge (only in cyclic pipelines): bottom-up, curved
            start, end = (x0, y0 + box_h / 2), (x1, y1 - box_h / 2)
            rad = 0.3
        else:
            start, end = (x0, y0 - box_h / 2), (x1, y1 + box_h / 2)
        arrow = FancyArrowPatch(
            start,
            end,
            arrowstyle="-|>",
            mutation_scale=14,
            linewidth=1.3,
            linestyle=(0, (4, 3)) if edge.default else "-",
            color="#444" if not edge.conditional else "#7c3aed",
            connectionstyle=f"arc3,rad={rad}",
            zorder=1,
        )
        ax.add_patch(arrow)
        label = edge.label()
        if label:
            wrapped = "\n".join(textwrap.wrap(label, 30))
            mx, my = (start[0] + end[0]) / 2, (start[1] + end[1]) / 2
            ax.text(
                mx,
                my,
                wrapped,
                ha="center",
                va="center",
                fontsize=8,
                color="#4c1d95" if edge.conditional else "#444",
                bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "#ddd"},
                zorder=4,
            )

    handles = [
        plt.Line2D(
            [],
            [],
            marker="s",
            linestyle="",
            markersize=10,
            markerfacecolor=fill,
            markeredgecolor=stroke,
            label=kind,
        )
        for kind, (fill, stroke) in KIND_COLORS.items()
        if any(s.kind == kind for s in spec.stages.values())
    ]
    handles.append(plt.Line2D([], [], color="#7c3aed", label="when (conditional)"))
    handles.append(plt.Line2D([], [], color="#444", linestyle=(0, (4, 3)), label="else (default)"))
    ax.legend(
        handles=handles,
        loc="lower left",
        bbox_to_anchor=(0, -0.02),
        fontsize=8,
        frameon=False,
        ncol=3,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return path


def write_drawings(spec: PipelineSpec, prefix: str | Path) -> tuple[Path, Path]:
    """Write ``PREFIX.mmd`` (Mermaid) and ``PREFIX.png``; return both paths."""
    prefix = Path(prefix)
    mmd = prefix.with_name(prefix.name + ".mmd")
    png = prefix.with_name(prefix.name + ".png")
    mmd.parent.mkdir(parents=True, exist_ok=True)
    mmd.write_text(to_mermaid(spec), encoding="utf-8")
    draw_png(spec, png)
    return mmd, png
