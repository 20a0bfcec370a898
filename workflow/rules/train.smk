# Segmenter training: image training (LVIS / COCO), and training from another model's weights (video
# fine-tuning; at toy scale, Table IV's variant heads on the frozen method model).

FINETUNED = S.get("init", {})
CLIP_WEIGHTS = [TOY_CLIP] if S["pretrain_clip"] else []


def clip_set(wildcards=None):
    """At toy scale the CLIP weights are the ones the pipeline pretrained."""
    return f"clip.pretrained={CLIP_WEIGHTS[0]}" if CLIP_WEIGHTS else ""


rule train:
    input: train_data, CLIP_WEIGHTS
    output: FINAL_CHECKPOINT
    wildcard_constraints: model="(?!(?:" + "|".join(FINETUNED or ["-"]) + ")/)[^/]+"  # the others
    params: params=lambda w: params_file(w.model), clip=clip_set, out=filled(TRAIN_DIR)
    log: log_file("train", "model")
    threads: 2  # at toy scale nothing else can run beside it: every later stage needs the method model
    resources: **training_resources()
    priority: training_priority
    shell: "clipvis train --launcher local --params {params.params} --set data.root={ROOT} {params.clip} --out {params.out} > {log} 2>&1"


rule finetune:
    input: init=lambda w: FINAL_CHECKPOINT.format(model=FINETUNED[w.model]), data=train_data, clip=CLIP_WEIGHTS
    output: FINAL_CHECKPOINT
    wildcard_constraints: model="|".join(FINETUNED or ["-"])
    params: params=lambda w: params_file(w.model), clip=clip_set, out=filled(TRAIN_DIR)
    log: log_file("finetune", "model")
    resources: **training_resources()
    priority: training_priority
    shell: "clipvis finetune --launcher local --params {params.params} --set data.root={ROOT} {params.clip} --init {input.init} --out {params.out} > {log} 2>&1"
