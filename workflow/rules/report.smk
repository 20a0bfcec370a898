# Tables I-VI, plots, qualitative overlays (from the inference results) and reports/index.html.

rule tables:
    input:
        evaluation_targets(),
        expand(f"{RUNS}/{{model}}/bench/complexity.json", model=S["complexity_models"]),
    output: TABLES
    shell: "clipvis tables --scale {SCALE} --runs runs --data {ROOT} --out reports"
