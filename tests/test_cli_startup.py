"""A fast, quiet CLI: building the parser and every `--help` import no heavy library (behaviour, not time: the
timing is benchmarks/cli_startup.py), and the normal path (load the model, generate, cast) emits no warning."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

HEAVY = ("torch", "diffusers", "accelerate", "zarr", "gradio", "transformers", "scipy", "pandas")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-W", "always", "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=ENV, timeout=600)


def test_parser_and_every_help_import_no_heavy_library():
    done = _python(f"""
        import argparse, contextlib, io, sys
        from teramind_hf.cli import build_parser, main

        def paths(parser, prefix):
            subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
            if not subs:
                return [prefix]
            return [p for name, child in subs[0].choices.items() for p in paths(child, [*prefix, name])]

        commands = paths(build_parser(), [])
        assert len(commands) >= 5, commands
        for argv in [[], *commands]:
            with contextlib.redirect_stdout(io.StringIO()) as out:
                try:
                    main([*argv, "--help"])
                except SystemExit as exit_:
                    assert exit_.code == 0, (argv, exit_.code)
            assert "usage: teramind" in out.getvalue(), argv
        loaded = sorted(m for m in {HEAVY!r} if m in sys.modules)
        assert not loaded, loaded
        print(len(commands))
    """)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= 5


def test_normal_path_emits_no_warnings():
    """from_pretrained (also with the diffusers spelling torch_dtype=), a small generation and dtype casts: nothing
    on stderr at all with every warning enabled (progress bars off, which are not warnings)."""
    done = _python("""
        import logging, torch
        from diffusers.utils import logging as diffusers_logging
        from teramind_hf import TeraMindPipeline
        from teramind_hf.data.phantom import make_phantom

        diffusers_logging.disable_progress_bar()
        torch.set_num_threads(1)
        pipe = TeraMindPipeline.from_pretrained()
        pipe = TeraMindPipeline.from_pretrained(torch_dtype=torch.float32)
        pipe.set_progress_bar_config(disable=True)
        phantom = make_phantom(256, 256, num_slices=2, seed=2, um_per_px=0.5)
        images = pipe(phantom.genes, gene_names=list(phantom.panel), num_inference_steps=1, generator=0).images
        pipe.to(torch.float32)
        pipe.unet.to(torch.float32)
        pipe.unet.to(dtype=torch.float32, memory_format=torch.channels_last_3d)
        assert pipe.unet.dtype == torch.float32
        print(images.shape)
    """)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr


def test_a_sub_command_that_fails_to_import_is_an_error_not_a_missing_command(monkeypatch):
    """The parser imports every sub-command module; one that fails to import must fail loudly, not vanish."""
    import pytest

    import teramind_hf.cli as cli

    monkeypatch.setattr(cli, "SUBCOMMAND_MODULES", (*cli.SUBCOMMAND_MODULES, "no_such_subcommand"))
    with pytest.raises(ModuleNotFoundError, match="no_such_subcommand"):
        cli.build_parser()
