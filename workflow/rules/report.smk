# Tables I-VI, image-level AP, the toy CLIP's accuracy, plots, qualitative overlays and reports/index.html.

rule tables:
    input:
        evaluation_targets(),
        complexity_targets(),
        image_targets(),
        qualitative_targets(),
        diagnostics_targets(),
        matching_test_targets(),
        CLIP_WEIGHTS,
    output: TABLES
    log: log_file("tables")
    shell: "clipvis tables --scale {SCALE} --runs {RUNS_ROOT} --data {ROOT} --out {REPORTS} > {log} 2>&1"
