# Inference (every test-time variant of a model in one pass over the videos) and scoring.

rule infer:
    input: checkpoint=f"{RUNS}/{{model}}/train/model_final.pt", data=lambda w: data_ready(w.benchmark), clip=CLIP_WEIGHTS
    output: f"{RUNS}/{{model}}/infer/{{benchmark}}/variants.json"
    params:
        params=lambda w: params_file(w.model),
        clip=clip_set,
        variants=lambda w: " ".join(variants_of(w.model, w.benchmark)),
    shell: "clipvis infer --params {params.params} --benchmark {wildcards.benchmark} --checkpoint {input.checkpoint}"
           " --set data.root={ROOT} {params.clip} --variants {params.variants} --out {RUNS}/{wildcards.model}/infer/{wildcards.benchmark}"


rule score:
    input: f"{RUNS}/{{model}}/infer/{{benchmark}}/variants.json"
    output: f"{RUNS}/{{model}}/score/{{benchmark}}/scores.json"
    shell: "clipvis score --benchmark {wildcards.benchmark} --root {ROOT}"
           " --infer-dir {RUNS}/{wildcards.model}/infer/{wildcards.benchmark} --out {RUNS}/{wildcards.model}/score/{wildcards.benchmark}"


rule complexity:
    input: checkpoint=f"{RUNS}/{{model}}/train/model_final.pt", clip=CLIP_WEIGHTS
    output: f"{RUNS}/{{model}}/bench/complexity.json"
    params: params=lambda w: params_file(w.model), clip=clip_set
    shell: "clipvis bench complexity --params {params.params} --checkpoint {input.checkpoint} --set {params.clip}"
           " --height {S[complexity_frame][0]} --width {S[complexity_frame][1]} --out {output}"
