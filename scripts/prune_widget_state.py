"""Keep only the widget state a notebook's pages can show: `python scripts/prune_widget_state.py nbs/09_widgets.ipynb ...`.

nbconvert's `--ExecutePreprocessor.store_widget_state=True` saves every widget the kernel ever created (nbclient ignores
comm_close), including the explorers that only tests drive and the controls a widget holds but does not display. A
static page renders only the widgets in `application/vnd.jupyter.widget-view+json` outputs and the models they refer to
(`IPY_MODEL_<id>`: children, layouts, styles). This drops every other model, rewriting the notebook atomically. Run it
after executing the notebook and before `nbdev_clean`."""
import json, os, re, sys

def prune(path: str) -> tuple:
    nb = json.load(open(path))
    meta = nb.get("metadata", {}).get("widgets", {}).get("application/vnd.jupyter.widget-state+json")
    if not meta: return 0, 0
    state = meta["state"]
    todo = [o["data"]["application/vnd.jupyter.widget-view+json"]["model_id"] for c in nb["cells"] for o in c.get("outputs", [])
            if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    keep = set()
    while todo:
        m = todo.pop()
        if m in keep or m not in state: continue
        keep.add(m); todo += re.findall(r"IPY_MODEL_([0-9a-f]{32})", json.dumps(state[m]))
    before = len(state)
    meta["state"] = {k: v for k, v in state.items() if k in keep}
    tmp = path + ".tmp"
    with open(tmp, "w") as f: json.dump(nb, f, indent=1, ensure_ascii=False); f.write("\n")
    os.replace(tmp, path)
    return before, len(keep)

if __name__ == "__main__":
    for p in sys.argv[1:]:
        b, k = prune(p)
        print(f"{p}: kept {k} of {b} widget models, {os.path.getsize(p) // 1024} KB")
