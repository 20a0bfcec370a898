# Inference (every test-time variant of a model in one pass over the videos) and scoring; image-level AP on
# held-out images; overlays of a few videos with `clipvis segment`.

rule infer:
    input: checkpoint=checkpoint_file, data=lambda w: data_ready(w.benchmark), clip=CLIP_WEIGHTS
    output: f"{RUNS}/{{model}}/infer/{{benchmark}}/variants.json"
    params:
        params=lambda w: params_file(w.model),
        clip=clip_set,
        variants=lambda w: " ".join(variants_of(w.model, w.benchmark)),
    shell: "clipvis infer --launcher local --params {params.params} --benchmark {wildcards.benchmark} --checkpoint {input.checkpoint}"
           " --set data.root={ROOT} {params.clip} --variants {params.variants} --out {RUNS}/{wildcards.model}/infer/{wildcards.benchmark}"


rule score:
    input: f"{RUNS}/{{model}}/infer/{{benchmark}}/variants.json"
    output: f"{RUNS}/{{model}}/score/{{benchmark}}/scores.json"
    shell: "clipvis score --benchmark {wildcards.benchmark} --root {ROOT}"
           " --infer-dir {RUNS}/{wildcards.model}/infer/{wildcards.benchmark} --out {RUNS}/{wildcards.model}/score/{wildcards.benchmark}"


rule complexity:
    input: checkpoint=checkpoint_file, clip=CLIP_WEIGHTS
    output: f"{RUNS}/{{model}}/bench/complexity.json"
    params: params=lambda w: params_file(w.model), clip=clip_set
    shell: "clipvis bench complexity --params {params.params} --checkpoint {input.checkpoint}"
           " --set data.root={ROOT} {params.clip}"
           " --height {S[complexity_frame][0]} --width {S[complexity_frame][1]} --out {output}"


rule eval_images:
    input: checkpoint=checkpoint_file, data=lambda w: data_ready(w.dataset), clip=CLIP_WEIGHTS
    output: f"{RUNS}/{{model}}/eval_images/{{dataset}}/metrics.json"
    params: params=lambda w: params_file(w.model), clip=clip_set
    shell: "clipvis eval-images --params {params.params} --checkpoint {input.checkpoint} --dataset {wildcards.dataset}"
           " --set data.root={ROOT} {params.clip} --out {RUNS}/{wildcards.model}/eval_images/{wildcards.dataset}"


rule qualitative:
    input: checkpoint=checkpoint_file, data=lambda w: data_ready(w.benchmark), clip=CLIP_WEIGHTS
    output: f"{RUNS}/{{model}}/qualitative/{{benchmark}}_{{video}}/overlay.gif"
    params: params=lambda w: params_file(w.model), clip=clip_set, frames=lambda w: video_frames(w.benchmark, w.video)
    shell: "clipvis segment {params.frames} --benchmark {wildcards.benchmark} --root {ROOT} --params {params.params}"
           " --checkpoint {input.checkpoint} --set data.root={ROOT} {params.clip}"
           " --out {RUNS}/{wildcards.model}/qualitative/{wildcards.benchmark}_{wildcards.video}"


rule matching_test:
    input: checkpoint=checkpoint_file, data=lambda w: data_ready(w.benchmark), clip=CLIP_WEIGHTS
    output: f"{RUNS}/{{model}}/matching_test/{{benchmark}}/matching_test.json"
    params:
        params=lambda w: params_file(w.model),
        clip=clip_set,
        variants=" ".join(S.get("matching_test", {}).get("variants", [])),
        noise=" ".join(str(level) for level in S.get("matching_test", {}).get("noise", [])),
    shell: "clipvis matching-test --params {params.params} --benchmark {wildcards.benchmark} --checkpoint {input.checkpoint}"
           " --set data.root={ROOT} {params.clip} --variants {params.variants} --noise {params.noise}"
           " --out {RUNS}/{wildcards.model}/matching_test/{wildcards.benchmark}"


rule toy_diagnostics:
    input:
        infer=lambda w: expand(f"{RUNS}/{w.model}/infer/{{benchmark}}/variants.json", benchmark=S["benchmarks"]),
        clip=CLIP_WEIGHTS,
    output: f"{RUNS}/{{model}}/bench/toy_diagnostics.json"
    params: params=lambda w: params_file(w.model), clip=clip_set
    shell: "clipvis bench toy --params {params.params} --root {ROOT} --set data.root={ROOT} {params.clip}"
           " --model-runs {RUNS}/{wildcards.model} --out {output}"
