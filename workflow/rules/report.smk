# Tables I-VI, plots, qualitative overlays and reports/index.html.

rule qualitative:
    input: checkpoint=f"{RUNS}/{{model}}/train/model_final.pt", data=lambda w: data_ready(w.benchmark), clip=CLIP_WEIGHTS
    output: f"{RUNS}/{{model}}/qualitative/{{benchmark}}.gif"
    params: params=lambda w: params_file(w.model), clip=clip_set
    shell: "clipvis segment --benchmark-video {wildcards.benchmark}:0 --root {ROOT} --params {params.params}"
           " --checkpoint {input.checkpoint} --set {params.clip} --out {RUNS}/{wildcards.model}/qualitative/{wildcards.benchmark}"
           " --gif {output}"


rule tables:
    input:
        evaluation_targets(),
        expand(f"{RUNS}/{{model}}/bench/complexity.json", model=S["complexity_models"]),
        expand(f"{RUNS}/{{model}}/qualitative/{{benchmark}}.gif", model=S["ablation_model"],
               benchmark=S["ablation_benchmarks"]) if SCALE == "toy" else [],
    output: TABLES
    shell: "clipvis tables --scale {SCALE} --runs runs --out reports"
