"""The pure architecture model, without Unicorn."""

from sandbox.arch import esr as E
from sandbox.arch import pstate as ps
from sandbox.arch.decode import decode_load_store
from sandbox.arch.exception import ExceptionKind, take_exception, vector_offset
from sandbox.asm import assemble_one


def insn(text: str) -> int:
    return int.from_bytes(assemble_one(text), "little")


def test_vector_offsets_for_every_source_and_kind():
    assert vector_offset(0x3C5, ExceptionKind.SYNC) == 0x200
    assert vector_offset(0x3C4, ExceptionKind.SERROR) == 0x180
    assert vector_offset(0x000, ExceptionKind.SERROR) == 0x580
    assert vector_offset(0x000, ExceptionKind.IRQ) == 0x480
    assert vector_offset(0x3C5, ExceptionKind.FIQ) == 0x300


def test_take_exception_follows_aarch64_takeexception():
    e = take_exception(kind=ExceptionKind.SYNC, from_pstate=ps.N | ps.DIT | ps.SS | ps.EL0T,
                       preferred_return=0x1004, vbar=0x8000 | 0x7FF, sctlr_el1=0, esr=E.syn_svc(1))
    assert e.pc == 0x8400 and e.elr == 0x1004 and e.spsr == ps.N | ps.DIT | ps.SS
    # NZCV and DIT kept, DAIF set, SS cleared, PAN set (SPAN=0), EL1h
    assert e.pstate == ps.N | ps.DIT | ps.PAN | ps.DAIF | ps.EL1H


def test_syndromes_match_the_values_checked_on_qemu():
    assert E.syn_svc(0x42) == 0x56000042
    assert E.syn_brk(0x123) == 0xF2000123
    assert E.syn_uncategorized() == 0x02000000
    assert E.syn_data_abort(True, E.FSC.SEA) == 0x96000010
    assert E.syn_data_abort(True, E.FSC.SEA, wnr=True) == 0x96000050
    assert E.syn_data_abort(False, E.FSC.SEA) == 0x92000010
    assert E.syn_instruction_abort(True, E.FSC.SEA) == 0x86000010
    assert E.syn_serror(0x11) == 0xBE000011 and E.syn_serror(E.IDS) == 0xBF000000


def test_load_store_decoding_gives_the_isv_fields():
    ldr = decode_load_store(insn("ldrsb w3, [x1, #4]"))
    assert (ldr.is_load, ldr.size, ldr.rt, ldr.sign_extend, ldr.reg64, ldr.syndrome_valid) == (True, 1, 3, True, False, True)
    assert decode_load_store(insn("ldr x0, [x1], #8")).syndrome_valid is False
    assert decode_load_store(insn("ldp x0, x1, [x2]")).syndrome_valid is False
    assert decode_load_store(insn("ldr q0, [x1]")).syndrome_valid is False
    stlr = decode_load_store(insn("stlr w5, [x2]"))
    assert (stlr.is_load, stlr.acquire_release, stlr.syndrome_valid) == (False, True, True)
    assert decode_load_store(insn("ldxr x0, [x1]")).syndrome_valid is False
    assert decode_load_store(insn("add x0, x1, x2")) is None


def test_esr_decode_names_fields():
    d = E.decode(0x96000050)
    assert d["ec_name"] == "DABT_CUR" and d["wnr"] is True and d["fsc"] == 0x10
    assert E.decode(0xBE000011)["dfsc"] == 0x11
