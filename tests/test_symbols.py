"""Guest symbols: `symbol+offset` next to addresses, as addr2line and gdb print them."""

from sandbox import Vm, assemble
from sandbox.symbols import RANK_FUNCTION, RANK_LABEL, RANK_OBJECT, Symbol, Symbolizer


def test_a_sized_symbol_names_only_its_own_bytes_and_only_inside_its_image():
    s = Symbolizer()
    s.add_image([Symbol("main", 0x1000, 0x20, RANK_FUNCTION), Symbol("table", 0x1040, 0x10, RANK_OBJECT)],
                0x1000, 0x1050)
    assert s.format(0x1000) == "main" and s.format(0x101C) == "main+0x1c"
    assert s.format(0x1020) == ""  # padding after main
    assert s.annotate(0x1044) == "0x1044 <table+0x4>"
    assert s.format(0x0FFC) == "" and s.format(0x1050) == ""  # outside the image
    assert s["table"] == 0x1040


def test_labels_reach_the_next_label_and_the_later_of_two_at_one_address_wins():
    program = assemble("start:\n nop\n nop\nstack_top:\nnext:\n nop\n.equ LIMIT, 0x1004\n", 0x1000)
    s = Symbolizer()
    s.add_program(program)
    assert s.format(0x1004) == "start+0x4"
    assert s.format(0x1008) == "next"  # `stack_top:` ends what precedes; `next:` starts what follows
    assert s["LIMIT"] == 0x1004 and s.format(0x1004) == "start+0x4"  # a constant names no address


def test_a_function_beats_a_label_at_the_same_address():
    s = Symbolizer()
    s.add_image([Symbol("f", 0x2000, 8, RANK_FUNCTION * 2), Symbol("__text_start", 0x2000, 0, RANK_LABEL * 2 + 1)],
                0x2000, 0x2008)
    assert s.format(0x2004) == "f+0x4"


def test_vm_load_exports_program_labels_for_exits_and_records():
    vm = Vm()
    program = assemble('.include "kernel.S"\nguest_main:\n svc #1\n ret\n', 0x40000000)
    vm.load(program)
    assert vm.symbols.format(program["guest_main"] + 4) == "guest_main+0x4"
    assert vm.symbols.format(program["exc_vectors"] + 0x200) == "exc_vectors+0x200"
