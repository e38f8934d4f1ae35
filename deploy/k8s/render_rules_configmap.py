"""Write deploy/k8s/configmap-rules.yaml from rules/*.yaml (run after changing a rule file)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEADER = """\
# The risk-appetite rules as shipped (rules/*.yaml, byte for byte: tested). Analysts change
# rules/ in git; regenerate with `python deploy/k8s/render_rules_configmap.py`.
apiVersion: v1
kind: ConfigMap
metadata:
  name: decision-service-rules
  namespace: decision-service
data:
"""


def render() -> str:
    out = [HEADER]
    for path in sorted((ROOT / "rules").glob("*.yaml")):
        out.append(f"  {path.name}: |\n")
        for line in path.read_text().splitlines(keepends=True):
            out.append("    " + line if line.strip() else "\n")
    return "".join(out)


if __name__ == "__main__":
    (ROOT / "deploy" / "k8s" / "configmap-rules.yaml").write_text(render())
