# Tables I-VI, image-level AP, the toy CLIP's accuracy, plots, qualitative overlays and reports/index.html.

rule tables:
    input:
        evaluation_targets(),
        expand(f"{RUNS}/{{model}}/bench/complexity.json", model=S["complexity_models"]),
        image_targets(),
        qualitative_targets(),
        diagnostics_targets(),
        matching_test_targets(),
        CLIP_WEIGHTS,
    output: TABLES
    shell: "clipvis tables --scale {SCALE} --runs runs --data {ROOT} --out reports"
