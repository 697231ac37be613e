"""The whole-model compiler: ISA-simulator logits and intermediates equal the golden forward on
tiny-digits (tiny and default, both variant sets) and on DeiT-Tiny-shaped blocks; the memory plan
survives a rerun; layer names; compile errors name the layer and the limit."""

import dataclasses
import random

import numpy as np
import pytest
import torch

from vitaccel.config import preset
from vitaccel.isa import Opcode
from vitaccel.sw import isasim
from vitaccel.sw.compile_model import _Builder, compile_model
from vitaccel.sw.compiler import CompileError
from vitaccel.sw.digits import digits_split
from vitaccel.sw.forward import forward, patches, quantize_input, trace
from vitaccel.sw.program import Program, ProgramError
from vitaccel.sw.quantize import calibrate, quantize
from vitaccel.sw.vit import VisionTransformer, ViTConfig, load_builtin

I_VIT = {"softmax": "shiftmax", "layernorm": "i_layernorm", "gelu": "shift"}


@pytest.fixture(scope="module")
def digits():
    model = load_builtin("tiny-digits")
    stats = calibrate(model, digits_split("calib")[0][:16])
    return {"sole": quantize(model, stats), "i-vit": quantize(model, stats, **I_VIT)}


@pytest.fixture(scope="module")
def images():
    return digits_split("test")[0][:40]


def random_intvit(config: ViTConfig, seed: int, **variants):
    """A randomly initialised float ViT of shape ``config`` quantized on two random images."""
    torch.manual_seed(seed)
    model = VisionTransformer(config).eval()
    shape = (2, config.in_chans, config.img_size, config.img_size)
    calib = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    return quantize(model, calibrate(model, calib), **variants)


def accel(name, intvit):
    """The preset ``name`` with the model's variants."""
    return dataclasses.replace(preset(name), **intvit.variants).validate()


def run_images(program, intvit, images):
    """Logits of every image through the ISA simulator, and the final images."""
    tokens = patches(quantize_input(intvit, images), intvit.config.patch_size)
    results = [isasim.run(program.with_tensors(input=t)) for t in tokens]
    assert all(r.ok for r in results), [r.error for r in results]
    return np.concatenate([program.read_tensor(r.image, "logits") for r in results]), results


def assert_logits(program, intvit, images, seed):
    got, _ = run_images(program, intvit, images)
    expected = forward(intvit, images)
    bad = np.argwhere(got != expected)
    assert not bad.size, (f"seed {seed}: first mismatch image {bad[0][0]} class {bad[0][1]}: "
                          f"{got[tuple(bad[0])]} != {expected[tuple(bad[0])]}")


@pytest.mark.parametrize("variant", ["sole", "i-vit"])
@pytest.mark.parametrize("cfg_name", ["tiny", "default"])
def test_tiny_digits_logits_equal_forward(digits, images, variant, cfg_name):
    iv = digits[variant]
    seed = random.randrange(1 << 16)
    picks = np.random.default_rng(seed).choice(len(images), 4, replace=False)
    program = compile_model(iv, accel(cfg_name, iv), name="tiny-digits")
    assert_logits(program, iv, images[picks], seed)


def unpad_heads(a, heads, dh, dhp):
    """(T, groups*heads*dhp) in the compiler's per-head padded layout -> (T, groups*heads*dh)."""
    t = a.shape[0]
    return a.reshape(t, -1, dhp)[:, :, :dh].reshape(t, -1)


def assert_intermediates(program, results, intvit, images):
    """Every activation symbol of a keep_intermediates program equals trace() (rows it computes)."""
    tr = trace(intvit, images)
    cfg = intvit.config
    dhp = -(-cfg.head_dim // program.config.cols) * program.config.cols
    names = [n for n, s in program.symbols.items() if s.role == "output" and n in tr]
    assert {"x0", "blocks.0.qkv", "blocks.0.attn.out", "blocks.0.gelu", "norm", "logits"} <= set(names)
    for i, r in enumerate(results):
        for name in names:
            got = program.read_tensor(r.image, name)
            if name.endswith(("qkv", "attn.out")):
                got = unpad_heads(got, cfg.num_heads, cfg.head_dim, dhp)
            expected = tr[name][i:i + 1] if name == "logits" else tr[name][i][:got.shape[0]]
            bad = np.argwhere(got != expected)
            assert not bad.size, f"image {i}: {name} differs first at {bad[0]}"


def test_tiny_digits_intermediates_equal_trace(digits, images):
    iv = digits["sole"]
    program = compile_model(iv, preset("tiny"), keep_intermediates=True)
    _, results = run_images(program, iv, images[:2])
    assert_intermediates(program, results, iv, images[:2])


def test_deit_tiny_blocks_on_default():
    # DeiT-Tiny shape: 197 tokens, dim 192, 3 heads of 64 (padded to 72 on a 12-wide array). Two
    # blocks: the first computes every token, the last only the class token after its keys.
    iv = random_intvit(ViTConfig(depth=2), seed=0)
    image = torch.randn((1, 3, 224, 224), generator=torch.Generator().manual_seed(7))
    # Both blocks run fused; the first block's fc2 has more output tiles (16 of 197 rows) than ACC
    # holds besides fc1's two tiles (8: fc1's tiles alternate between the banks, issue 21), so it
    # needs the second pass, the last block's (1 row) does not.
    cfg = preset("default")
    program = compile_model(iv, cfg)
    names = {name for _, _, name in program.layers}
    assert {"blocks.0.mlp", "blocks.0.fc2", "blocks.1.mlp"} <= names
    assert not names & {"blocks.0.fc1", "blocks.0.gelu", "blocks.1.fc2"}
    # qkv leaves head 0's queries and keys (and, in the last block, its values) where its
    # attention reads them; each head loads the next head's keys and queries (6 tiles each)
    # between its attention x V MATMULs, so only the values (6 tiles) and the PARAM rows are left
    # to the head itself. The first block's head 0 takes the later heads' bank-split layout, its
    # values in bank 1 (x's during qkv), so it loads them too; the bank-split heads load their
    # values in halves (12 LOADs), one beside each key tile's q k.T MATMULs.
    loads = {name: sum(w & 0xFF == Opcode.LOAD.value for w in program.instructions[start:stop])
             for start, stop, name in program.layers}
    assert [loads[f"blocks.0.attn.{h}"] for h in range(3)] == [1 + 12 + 12, 1 + 12 + 12, 1 + 12]
    assert [loads[f"blocks.1.attn.{h}"] for h in range(3)] == [1 + 12, 1 + 6 + 12, 1 + 6]
    assert_logits(program, iv, image, seed=7)
    program = compile_model(iv, cfg, keep_intermediates=True)
    assert program.symbol("blocks.0.qkv").shape == (197, 3 * 3 * 72)
    # The tensors the fused schedule keeps on chip are stored as well.
    assert {f"blocks.{i}.{op}" for i in (0, 1) for op in ("norm1", "proj", "norm2", "fc1", "gelu", "fc2")
            } <= set(program.symbols)
    _, results = run_images(program, iv, image)
    assert_intermediates(program, results, iv, image)


@pytest.mark.parametrize("variant", ["sole", "i-vit"])
@pytest.mark.parametrize("param_rows, fused", [(64, False), (128, True)])
def test_fused_schedule_only_where_it_fits(digits, images, variant, param_rows, fused):
    # On tiny, qkv's 27 output tiles need 81 PARAM rows to stay resident, more than its 64: the
    # blocks run the unfused schedule there.
    iv = digits[variant]
    cfg = dataclasses.replace(accel("tiny", iv), param_rows=param_rows)
    program = compile_model(iv, cfg, keep_intermediates=True)
    names = {name for _, _, name in program.layers}
    assert ("blocks.0.mlp" in names) == fused and ("blocks.0.gelu" in names) != fused
    _, results = run_images(program, iv, images[:2])
    assert_intermediates(program, results, iv, images[:2])


def test_rerun_with_only_the_input_rewritten(digits, images):
    # x0's class row and the input are never reused as scratch: the final image of one run, with
    # the next image's patches written in, is a valid starting image.
    iv = digits["sole"]
    program = compile_model(iv, preset("tiny"))
    tokens = patches(quantize_input(iv, images[:2]), iv.config.patch_size)
    first = isasim.run(program.with_tensors(input=tokens[0]))
    image = bytearray(first.image)
    program.write_tensor(image, "input", tokens[1])
    second = isasim.run(Program(program.config, program.instructions, bytes(image), program.symbols))
    assert np.array_equal(program.read_tensor(second.image, "logits"), forward(iv, images[1:2]))


def test_memory_plan_reuses_dead_buffers(digits):
    iv = digits["sole"]
    reused = compile_model(iv, preset("default"))
    kept = compile_model(iv, preset("default"), keep_intermediates=True)
    scratch = [n for n in reused.symbols if n.startswith("scratch.")]
    assert 2 <= len(scratch) <= 6, scratch
    assert len(reused.image) < len(kept.image)
    assert reused.symbol("input").role == "input" and reused.symbol("logits").shape == (1, 10)
    assert reused.symbol("logits").dtype == "int32"


def test_layers_name_every_instruction(digits, tmp_path):
    iv = digits["sole"]
    program = compile_model(iv, preset("tiny"))
    layers = program.layers
    assert layers[0][:2] == (0, layers[1][0]) and layers[-1] == (len(program.instructions) - 1,
                                                                 len(program.instructions), "end")
    assert all(a[1] == b[0] for a, b in zip(layers, layers[1:]))
    names = [name for _, _, name in layers]
    assert names[:4] == ["patch_embed", "pos_embed", "blocks.0.norm1", "blocks.0.qkv"]
    assert {"blocks.1.attn.2", "blocks.1.add2", "norm", "head"} <= set(names)
    listing = program.listing().splitlines()
    assert listing[0] == "; patch_embed" and "; blocks.0.attn.0" in listing
    assert len(listing) == len(program.instructions) + len(layers)
    program.save(tmp_path / "vit.npz")
    assert Program.load(tmp_path / "vit.npz").layers == layers


def test_a_field_that_does_not_fit_is_a_compile_error():
    builder = _Builder(preset("tiny"), keep_intermediates=False)
    builder.emit(Opcode.MATMUL, rows=1 << 16)
    with pytest.raises(CompileError, match=r"^p: MATMUL.rows=65536 does not fit in 16 bits$"):
        builder.program("p")


def test_row_too_long_for_the_units(digits):
    iv = digits["sole"]
    with pytest.raises(CompileError, match=r"blocks\.0\.norm1: rows of 36 elements exceed max_row=32, "
                                           r"the row buffer of the layernorm unit"):
        compile_model(iv, dataclasses.replace(preset("tiny"), max_row=32))
    # 65 tokens, 36 channels: only the softmax rows are too long.
    wide = random_intvit(ViTConfig(img_size=16, patch_size=2, in_chans=1, num_classes=10, embed_dim=36,
                                   depth=1, num_heads=3, mlp_ratio=2.0), seed=1)
    with pytest.raises(CompileError, match=r"blocks\.0\.attn\.0: softmax rows of 65 tokens exceed max_row=64"):
        compile_model(wide, dataclasses.replace(preset("tiny"), max_row=64))


def test_model_too_large_for_the_memories(digits):
    iv = digits["sole"]
    tiny = preset("tiny")
    with pytest.raises(CompileError, match=r"blocks\.0\.attn\.0: 17 keys and values of 12 features \(120 rows\) "
                                           r"and one query row \(8 rows\) exceed spad_rows=64"):
        compile_model(iv, dataclasses.replace(tiny, spad_rows=64))
    with pytest.raises(CompileError, match=r"blocks\.0\.norm1: 37 parameter rows exceed param_rows=32"):
        compile_model(iv, dataclasses.replace(tiny, param_rows=32))
    with pytest.raises(CompileError, match=r"vit: the program and its tensors need \d+ bytes of external "
                                           r"memory, more than the 65536 bytes addr_bits=16 can address"):
        compile_model(random_intvit(ViTConfig(img_size=32, patch_size=4, embed_dim=48, depth=2, num_heads=2,
                                              num_classes=10), seed=2),
                      dataclasses.replace(tiny, addr_bits=16))


def test_model_and_accelerator_must_agree(digits):
    with pytest.raises(CompileError, match=r"the model's softmax='e2softmax' differs from the accelerator's "
                                           r"softmax='shiftmax'"):
        compile_model(digits["sole"], dataclasses.replace(preset("tiny"), softmax="shiftmax"))


def test_program_layers_are_checked(digits):
    program = compile_model(digits["sole"], preset("tiny"))
    n = len(program.instructions)
    for bad in ([(0, 0, "empty")], [(5, 9, "a"), (8, 10, "b")], [(0, n + 1, "past the end")], [(0, 1)]):
        with pytest.raises(ProgramError, match="layer"):
            dataclasses.replace(program, layers=bad)
