"""All checkpoint I/O: what the project writes to disk or a bucket and reads back.

    errors.py      CheckpointError (a user error: the message names the directory, step and file)
    fileio.py      output directories that are complete or absent; tokenizer copies; JSON
    model_dir.py   our model checkpoint directory (model_config.json + orbax params/ [+ LoRA, tokenizer])
    run_record.py  what an exported checkpoint records about the training run it came from
    rundir.py      the training workdir layout; reading its parameters (`load_checkpoint` for any directory)
    lora_base.py   the frozen base of a LoRA run, rebuilt from the reference its config records
    integrity.py   is every file of a training checkpoint step readable (checked before each restore)
    manager.py     the training checkpoints: orbax CheckpointManager save / restore / damaged-step fallback
    export.py      a training workdir -> a model checkpoint directory (the input of the HF export in convert/)

Conversion to and from other formats (Hugging Face safetensors, PEFT, the model card) is `convert/`, which
sits on top of this package. Nothing is imported here so that `convert.hf` can use `fileio` while
`lora_base` reads an HF directory through `convert.hf`.
"""
