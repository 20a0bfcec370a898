# The authors' released checkpoints (weights=released), imported once each into clipvis checkpoints.

from clipvis.data.released import RELEASED_BY_MODEL


rule import_released:
    input: lambda w: RELEASED_BY_MODEL[w.model].path(ROOT)
    output: RELEASED_CHECKPOINT
    params: params=lambda w: params_file(w.model)
    log: f"{os.path.dirname(RELEASED_CHECKPOINT)}/import.log"
    shell: "clipvis import-checkpoint {input} --params {params.params} --out {output} > {log} 2>&1"


# A checkpoint file the user has not put in place: the job fails, saying where to get it and where it goes.
rule released_weights:
    output: f"{ROOT}/weights/{{file}}"
    wildcard_constraints: file="[^/]+\\.pth"
    log: log_file("released_weights", "file")
    shell: "clipvis data --benchmark released-weights --check --root {ROOT} > {log} 2>&1"
