# Data and the frozen CLIP's inputs: the toy world (or the real benchmarks' files), the toy CLIP.

rule data_toy:
    output: f"{ROOT}/toy/world.json"
    params: params=params_file(S["ablation_model"])
    shell: "clipvis data --benchmark toy --root {ROOT} --params {params.params}"


rule data_benchmark:
    output: touch(f"{ROOT}/.checked/{{benchmark}}")
    wildcard_constraints: benchmark="(?!toy).+"
    shell: "clipvis data --benchmark {wildcards.benchmark} --root {ROOT}"


rule pretrain_clip:
    input: f"{ROOT}/toy/world.json"
    output: TOY_CLIP
    params: params=params_file(S["ablation_model"])
    shell: "clipvis pretrain-clip --launcher local --params {params.params} --set data.root={ROOT} clip_pretrain.out={output}"
