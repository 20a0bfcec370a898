# Inference (every test-time variant of a model in one pass over the videos) and scoring; image-level AP on
# held-out images; overlays of a few videos with `clipvis segment`.

rule infer:
    input: checkpoint=checkpoint_file, data=lambda w: data_ready(w.benchmark), clip=CLIP_WEIGHTS
    output: VARIANTS_JSON
    params:
        params=lambda w: params_file(w.model),
        clip=clip_set,
        variants=lambda w: " ".join(variants_of(w.model, w.benchmark)),
        out=filled(INFER_DIR),
    log: log_file("infer", "model", "benchmark")
    resources: **stage_resources("infer")
    shell: "clipvis infer --launcher local --params {params.params} --benchmark {wildcards.benchmark} --checkpoint {input.checkpoint}"
           " --set data.root={ROOT} {params.clip} --variants {params.variants} --out {params.out} > {log} 2>&1"


rule score:
    input: VARIANTS_JSON
    output: SCORES_JSON
    params: infer=filled(INFER_DIR), out=filled(SCORE_DIR)
    log: log_file("score", "model", "benchmark")
    shell: "clipvis score --benchmark {wildcards.benchmark} --root {ROOT} --infer-dir {params.infer} --out {params.out} > {log} 2>&1"


rule complexity:
    input: checkpoint=checkpoint_file, clip=CLIP_WEIGHTS
    output: COMPLEXITY_JSON
    params: params=lambda w: params_file(w.model), clip=clip_set
    log: log_file("complexity", "model")
    resources: **stage_resources("complexity")
    shell: "clipvis bench complexity --params {params.params} --checkpoint {input.checkpoint}"
           " --set data.root={ROOT} {params.clip}"
           " --height {S[complexity_frame][0]} --width {S[complexity_frame][1]} --out {output} > {log} 2>&1"


rule eval_images:
    input: checkpoint=checkpoint_file, data=lambda w: data_ready(w.dataset), clip=CLIP_WEIGHTS
    output: f"{EVAL_IMAGES_DIR}/{layout.METRICS_FILE}"
    params: params=lambda w: params_file(w.model), clip=clip_set, out=filled(EVAL_IMAGES_DIR)
    log: log_file("eval_images", "model", "dataset")
    shell: "clipvis eval-images --params {params.params} --checkpoint {input.checkpoint} --dataset {wildcards.dataset}"
           " --set data.root={ROOT} {params.clip} --out {params.out} > {log} 2>&1"


rule qualitative:
    input: checkpoint=checkpoint_file, data=lambda w: data_ready(w.benchmark), clip=CLIP_WEIGHTS
    output: f"{QUALITATIVE_DIR}/{layout.OVERLAY_FILE}"
    params:
        params=lambda w: params_file(w.model),
        clip=clip_set,
        frames=lambda w: video_frames(w.benchmark, w.video),
        out=filled(QUALITATIVE_DIR),
    log: log_file("qualitative", "model", "benchmark", "video")
    resources: **stage_resources("qualitative")
    shell: "clipvis segment {params.frames} --benchmark {wildcards.benchmark} --root {ROOT} --params {params.params}"
           " --checkpoint {input.checkpoint} --set data.root={ROOT} {params.clip} --out {params.out} > {log} 2>&1"


rule matching_test:
    input: checkpoint=checkpoint_file, data=lambda w: data_ready(w.benchmark), clip=CLIP_WEIGHTS
    output: f"{MATCHING_TEST_DIR}/{layout.MATCHING_TEST_FILE}"
    params:
        params=lambda w: params_file(w.model),
        clip=clip_set,
        variants=" ".join(S.get("matching_test", {}).get("variants", [])),
        noise=" ".join(str(level) for level in S.get("matching_test", {}).get("noise", [])),
        out=filled(MATCHING_TEST_DIR),
    log: log_file("matching_test", "model", "benchmark")
    shell: "clipvis matching-test --params {params.params} --benchmark {wildcards.benchmark} --checkpoint {input.checkpoint}"
           " --set data.root={ROOT} {params.clip} --variants {params.variants} --noise {params.noise} --out {params.out} > {log} 2>&1"


rule toy_diagnostics:
    input:
        infer=lambda w: expand(VARIANTS_JSON, model=w.model, benchmark=S["benchmarks"]),
        clip=CLIP_WEIGHTS,
    output: DIAGNOSTICS_JSON
    params: params=lambda w: params_file(w.model), clip=clip_set, model_runs=filled(MODEL_DIR)
    log: log_file("toy_diagnostics", "model")
    shell: "clipvis bench toy --params {params.params} --root {ROOT} --set data.root={ROOT} {params.clip}"
           " --model-runs {params.model_runs} --out {output} > {log} 2>&1"


rule iou_head_quality:
    input: checkpoint=checkpoint_file, data=data_ready("toy"), clip=CLIP_WEIGHTS
    output: IOU_HEAD_JSON
    params: params=lambda w: params_file(w.model), clip=clip_set
    log: log_file("iou_head_quality", "model")
    shell: "clipvis bench iou-head --params {params.params} --checkpoint {input.checkpoint} --root {ROOT}"
           " --set data.root={ROOT} {params.clip} --out {output} > {log} 2>&1"
