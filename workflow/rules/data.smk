# Data and the frozen CLIP's inputs: the toy world (or the real benchmarks' files), the toy CLIP.

rule data_toy:
    output: f"{ROOT}/toy/world.json"
    params: params=params_file(S["ablation_model"]), world=settings_of(S["ablation_model"], "toy")
    log: log_file("data_toy")
    shell: "clipvis data --benchmark toy --root {ROOT} --params {params.params} > {log} 2>&1"


rule data_benchmark:
    output: touch(f"{ROOT}/.checked/{{benchmark}}")
    wildcard_constraints: benchmark="(?!toy).+"
    log: log_file("data_benchmark", "benchmark")
    shell: "clipvis data --benchmark {wildcards.benchmark} --root {ROOT} > {log} 2>&1"


rule pretrain_clip:
    input: f"{ROOT}/toy/world.json"
    output: TOY_CLIP
    params: params=params_file(S["ablation_model"]), training=settings_of(S["ablation_model"], "clip_pretrain"),
            clip=settings_of(S["ablation_model"], "clip")  # the model and the dense map it is trained through
    log: log_file("pretrain_clip")
    threads: 2  # nothing else can run beside it: every later stage needs the CLIP
    shell: "clipvis pretrain-clip --launcher local --params {params.params} --set data.root={ROOT} clip_pretrain.out={output} > {log} 2>&1"
