"""The block's tail beside the array (issue 21, sw/compile_model.py ``_mlp_local``,
``_mlp_tail_row``): on the DeiT-Tiny-shaped program the model's last hidden tile is REQUANTized,
GELUed and STOREd beside pass A's last fc2 steps (over the last group's other tiles), its own fc2
MATMULs after them, and the logits still equal the golden forward."""

from vitaccel.config import preset
from vitaccel.isa import Opcode
from vitaccel.sw.compile_model import _mlp_tail_row


def _spans(program, spans, name):
    (start, stop), = [(a, b) for a, b, n in program.layers if n == name]
    return [(i, spans[i]) for i in range(start, stop)]


def _beside_matmul(spans, i):
    s = spans[i]
    return any(t.engine == "matmul" and t.start < s.end and s.start < t.end for t in spans if t is not s)


def test_last_hidden_tile_gelu_beside_fc2(deit_two_blocks):
    iv, program, spans = deit_two_blocks
    mlp = _spans(program, spans, "blocks.0.mlp")
    gelus = [i for i, s in mlp if s.opcode is Opcode.GELU]
    # every hidden tile's GELU, the last one's too, runs beside MATMULs
    assert len(gelus) == iv.blocks[0].fc1.weight.shape[0] // 12
    assert all(_beside_matmul(spans, i) for i in gelus)
    last = gelus[-1]
    # the last GELU comes after fc1's last MATMUL and before the last fc2 MATMULs (which read it)
    matmuls = [i for i, s in mlp if s.opcode is Opcode.MATMUL]
    assert any(i > last for i in matmuls) and any(i < last for i in matmuls)
    # the REQUANT just before it and the STOREs after it run beside MATMULs too
    side = [i for i, s in mlp if i > gelus[-2] and s.opcode in (Opcode.REQUANT, Opcode.STORE)]
    assert side and all(_beside_matmul(spans, i) for i in side if i < max(matmuls))


def test_tail_row_none_where_it_does_not_fit():
    cfg = preset("default")
    # one tile in the last group: nothing to run beside
    assert _mlp_tail_row(cfg, 197, 64, 21, 4096, 3536, 432, 5040, (0, 1024), [197]) is None
    # the last tile's ACC bank is that of pass A's first step
    assert _mlp_tail_row(cfg, 197, 63, 18, 4096, 3536, 432, 5040, (0, 1024), [197]) is None
    row = _mlp_tail_row(cfg, 197, 64, 18, 4096, 3536, 432, 5040, (0, 1024), [197])
    assert row is not None and row + 197 <= 2048


def test_deit_two_blocks_logits_equal_golden(deit_two_blocks, logits_equal_golden):
    iv, program, _ = deit_two_blocks
    logits_equal_golden(program, iv, 3)


def test_second_pass_requant_beside_its_last_step(deit_two_blocks):
    # add2 beside fc2's second pass (_fc2_add2): its output tiles alternate between the ACC banks
    # and complete one at a time (_stagger_order), so the tile completed before the last one has
    # its REQUANT (into the other ACC bank) beside the steps before the last and its ADD beside
    # the last step's MATMULs instead of after them.
    iv, program, spans = deit_two_blocks
    half = preset("default").acc_rows // 2
    fc2 = _spans(program, spans, "blocks.0.fc2")
    from vitaccel.isa import decode_fields
    fields = {i: decode_fields(program.instructions[i])[1] for i, _ in fc2}
    matmuls = [i for i, s in fc2 if s.opcode is Opcode.MATMUL]
    last = [i for i in matmuls if fields[i]["c_addr"] == fields[matmuls[-1]]["c_addr"]][-8:]
    bank = fields[matmuls[-1]]["c_addr"] // half
    requants = [i for i, s in fc2 if s.opcode is Opcode.REQUANT and fields[i]["acc_addr"] // half != bank]
    adds = [i for i, s in fc2 if s.opcode is Opcode.ADD]

    def beside_last(i):
        return any(spans[i].start < spans[mm].end and spans[mm].start < spans[i].end for mm in last)
    assert requants and not beside_last(requants[-1]) and spans[requants[-1]].end < spans[last[0]].end
    assert beside_last(adds[-1]) and adds[-1] > requants[-1]


def test_proj_first_tile_loads_only_its_inputs(deit_two_blocks):
    # proj's first tile waits for the attention output's LOADs (issue 21, _linear_local with
    # x_loads): no weight LOAD of the next tile among its MATMULs (the late one goes among the next
    # tile's), so each of its MATMULs waits for one LOAD of 197 rows only.
    iv, program, spans = deit_two_blocks
    from vitaccel.isa import decode_fields
    proj = _spans(program, spans, "blocks.0.proj")
    matmuls = [i for i, s in proj if s.opcode is Opcode.MATMUL]
    first_c = decode_fields(program.instructions[matmuls[0]])[1]["c_addr"]
    tile0 = [i for i in matmuls if decode_fields(program.instructions[i])[1]["c_addr"] == first_c][:18]
    loads = [decode_fields(program.instructions[i])[1]["rows"] for i, s in proj
             if tile0[0] < i < tile0[-1] and s.opcode is Opcode.LOAD]
    assert loads and set(loads) == {197}
