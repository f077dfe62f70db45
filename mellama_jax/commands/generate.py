"""Command line: continue prompts with a model directory (HF, model checkpoint or training workdir).

    mellama-generate --model PATH --prompt "The patient presented with" \
        [--prompt "..." ...] [--prompt_file prompts.txt] [--max_new_tokens 256] [--temperature 0]
        [--top_k 0] [--top_p 1.0] [--seed 0] [--stop "\\n\\n"] [--config.mesh.data=1 --config.mesh.tensor=1] [--json]
    mellama-generate --model PATH --chat [--stream] [--template NAME|tokenizer_config.json] [--system "..."]
    mellama-generate --model PATH --prompt "..." --stream

Prompts are text (tokenized with the tokenizer stored next to the model, BOS added) or, for directories
without a tokenizer, token ids: --prompt_ids "1,450,4996". Several prompts decode as one batch. Output: the
continuation of every prompt (with --json: one JSON object per prompt with ids and text); a summary line
with the decode speed goes to stderr. --stream prints each answer as it is decoded. --chat is an interactive
conversation: each line you type is a user turn, rendered with the model's chat template (--template, else
the chat_template of its tokenizer_config.json, else the template it was instruction-tuned with), as
transformers' apply_chat_template renders it; with --stream the answer is printed as it is decoded; an
empty line or Ctrl-D ends it.
Mesh and hosts as in training and evaluation: `--config.mesh.data/fsdp/tensor=N` shard the model (weights go
straight onto their shards); on several hosts every host runs the same command and process 0 prints.
"""
from __future__ import annotations

import json
import sys
import time

import jax

import mellama_jax
from mellama_jax import cli
from mellama_jax.commands.mesh_flags import parse_mesh_command
from mellama_jax.data.chat import load_chat_template
from mellama_jax.data.errors import DataError
from mellama_jax.data.templates import TEMPLATE_NAMES
from mellama_jax.generate import text as T
from mellama_jax.parallel import MeshConfig, axis_rules, make_mesh


def _parse_ids(text: str, flag: str) -> list[int]:
    try:
        return [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise cli.UsageError(f"{flag} {text!r}: expected comma-separated integer token ids, e.g. 1,450,4996") from None


def build_parser() -> cli.ArgumentParser:
    p = cli.ArgumentParser(prog="mellama-generate", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="HF directory, model checkpoint directory or training workdir")
    p.add_argument("--prompt", action="append", default=[], help="prompt text (repeat for a batch)")
    p.add_argument("--prompt_file", help="file with one prompt per line")
    p.add_argument("--prompt_ids", action="append", default=[], help="prompt as comma-separated token ids")
    p.add_argument("--chat", action="store_true", help="interactive conversation with the model's prompt template")
    p.add_argument("--template", default=None,
                   help=f"chat template for --chat: one of {', '.join(TEMPLATE_NAMES)}, a tokenizer_config.json or "
                        f".jinja file (default: the model's chat_template, else its recorded training template)")
    p.add_argument("--system", default=None, help="system message for --chat")
    p.add_argument("--stream", action="store_true", help="print the answer while it is decoded (one prompt)")
    p.add_argument("--max_new_tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top_k", type=int, default=0, help="0 = off")
    p.add_argument("--top_p", type=float, default=1.0, help="1 = off")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eos_id", type=int, default=None, help="default: the model's eos_token_id; -1 disables EOS")
    p.add_argument("--stop", action="append", default=[], help="stop string (text prompts; repeatable)")
    p.add_argument("--stop_ids", action="append", default=[], help="stop sequence as comma-separated token ids")
    p.add_argument("--batch_size", type=int, default=None, help="decode at most this many prompts at once")
    p.add_argument("--dtype", default=None, help="parameter dtype (float32, bfloat16); default: as stored")
    p.add_argument("--compute_dtype", default=None, help="activation/matmul dtype; default: the config's")
    p.add_argument("--json", action="store_true", help="print one JSON object per prompt")
    cli.add_distributed_flags(p)
    p.epilog = ("Mesh (as in training): --config.mesh.data=N --config.mesh.fsdp=N --config.mesh.tensor=N "
                "(-1: the remaining devices; default: one device).")
    return p


def chat(model, args, *, read=input, write=sys.stdout.write) -> int:
    """The interactive loop: read a user turn, stream the answer, keep the history."""
    template = model.chat_template_for(args.template)
    if template is None:
        raise cli.UsageError(f"{args.model}: no chat template with this model (no chat_template in its "
                             f"tokenizer_config.json, no instruction-tuning template recorded); pass --template "
                             f"(one of {', '.join(TEMPLATE_NAMES)}, or a tokenizer_config.json)")
    try:
        template = load_chat_template(template)
    except DataError as e:
        raise cli.UsageError(f"--template: {e}") from None
    if model.tokenizer is None:
        raise cli.UsageError(f"{args.model}: --chat needs a tokenizer stored with the model")
    messages = [{"role": "system", "content": args.system}] if args.system else []
    sys.stderr.write(f"chat with {args.model} (template {template}); an empty line or Ctrl-D ends it\n")
    while True:
        try:
            line = read("you> ")
        except EOFError:
            break
        if not line.strip():
            break
        messages.append({"role": "user", "content": line})
        write("model> ")
        if args.stream:
            answer = ""
            for piece in model.generate(messages, template=template, stream=True, **_sampling(args)):
                answer += piece
                write(piece)
                sys.stdout.flush()
        else:
            answer = model.generate(messages, template=template, **_sampling(args))
            write(answer)
        write("\n")
        sys.stdout.flush()
        messages.append({"role": "assistant", "content": answer})
    return 0


def _sampling(args) -> dict:
    return dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                top_p=args.top_p, seed=args.seed, eos_id=args.eos_id)


def main(argv=None) -> int:
    return cli.run(_main, argv)


def _prompts(args) -> tuple[list[str], list[list[int]]]:
    """The text and token-id prompts the flags give, checked against --chat and --stream."""
    text_prompts = list(args.prompt)
    if args.prompt_file:
        with open(args.prompt_file, encoding="utf-8") as f:
            text_prompts += [line.rstrip("\n") for line in f if line.strip()]
    id_prompts = [_parse_ids(s, "--prompt_ids") for s in args.prompt_ids]
    if not text_prompts and not id_prompts and not args.chat:
        raise cli.UsageError("give at least one --prompt, --prompt_file or --prompt_ids, or --chat")
    if args.chat and (text_prompts or id_prompts):
        raise cli.UsageError("--chat reads its turns from the terminal (standard input); leave out --prompt, "
                             "--prompt_file and --prompt_ids")
    if args.stream and not args.chat and len(text_prompts) + len(id_prompts) != 1:
        raise cli.UsageError("--stream takes exactly one prompt (or --chat)")
    return text_prompts, id_prompts


def _main(argv) -> int:
    parser = build_parser()
    args, mesh_cfg = parse_mesh_command(parser, argv)
    with axis_rules((mesh_cfg or MeshConfig()).rules):
        return _generate(args, mesh_cfg)


def _generate(args, mesh_cfg) -> int:
    text_prompts, id_prompts = _prompts(args)
    stops = [_parse_ids(s, "--stop_ids") for s in args.stop_ids]

    mesh = make_mesh(mesh_cfg) if mesh_cfg is not None else None
    # Unscanned layers: the layout decoding wants (no per-call split of stacked weights).
    model = mellama_jax.load(args.model, dtype=args.dtype, compute_dtype=args.compute_dtype, mesh=mesh,
                             scan_layers=False)
    tok = model.tokenizer
    if args.chat:
        return chat(model, args)
    if text_prompts and tok is None:
        raise cli.UsageError(f"{args.model}: no tokenizer stored with this model; pass --prompt_ids instead of "
                             f"--prompt")
    if args.stop and tok is None:
        raise cli.UsageError("--stop needs a tokenizer; use --stop_ids with token ids")
    options = dict(_sampling(args), stop=args.stop, stop_sequences=stops)
    if args.stream:
        prompt = text_prompts[0] if text_prompts else id_prompts[0]
        for piece in model.generate(prompt, stream=True, **options):
            sys.stdout.write(piece if isinstance(piece, str) else " ".join(map(str, piece)) + " ")
            sys.stdout.flush()
        sys.stdout.write("\n")
        return 0

    start = time.perf_counter()
    prompts = [tok.encode(t, bos=True) for t in text_prompts] + id_prompts
    options.pop("stop")
    if args.stop:
        options["stop_sequences"] += T.stop_ids(tok, args.stop)
    outputs = model.generate(prompts, batch_size=args.batch_size, **options)
    seconds = time.perf_counter() - start
    if jax.process_index() != 0:  # several hosts decoded together; one prints
        return 0

    for i, (prompt, new) in enumerate(zip(prompts, outputs)):
        text = None
        if tok is not None:
            # A model vocabulary padded beyond the tokenizer's (common for sharding) can emit unknown ids.
            unknown = [t for t in new if t >= tok.vocab_size]
            if unknown:
                print(f"prompt {i}: {len(unknown)} generated id(s) >= the tokenizer's vocab_size "
                      f"{tok.vocab_size} left out of the text", file=sys.stderr)
            text = T.decode(tok, new, "text", None, args.stop)
        if args.json:
            print(json.dumps({"index": i, "prompt_ids": prompt, "new_ids": new, "text": text}), flush=True)
        else:
            print(text if text is not None else " ".join(map(str, new)), flush=True)
    total = sum(len(o) for o in outputs)
    print(f"generated {total} tokens for {len(prompts)} prompt(s) in {seconds:.2f}s (compile included): "
          f"{total / max(seconds, 1e-9):.1f} tokens/s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
