"""Every SDEI call as the guest makes it, and the error codes of bad input
(reference/sdei.md sections 1 and 2; TF-A's checks and their order)."""

from sandbox.hyp.sdei_abi import DYNAMIC_PRIVATE_BASE, DYNAMIC_SHARED_BASE, SdeiFn as F

from guest_lib import SCRIPT, machine, run_script

OK, NOT_SUPPORTED, INVALID, DENIED, PENDING, OUT_OF_RESOURCE = 0, -1, -2, -3, -5, -10
VERSION_1_1_KVM = (1 << 48) | (1 << 32) | 0x4B564D
P0, P1, S0 = DYNAMIC_PRIVATE_BASE, DYNAMIC_PRIVATE_BASE + 1, DYNAMIC_SHARED_BASE


def script_machine(**kw):
    m = machine(SCRIPT, **kw)
    return m, m.sym("sdei_test_handler")


def test_version_and_features():
    assert run_script([(F.VERSION,), (F.FEATURES, 0), (F.FEATURES, 1), (F.FEATURES, 2), (F.FEATURES, 1 << 32)]) == [
        VERSION_1_1_KVM, 0x00030003, 0, INVALID, INVALID]


def test_bind_slots_are_configurable_and_reported():
    m, h = script_machine()
    m.vm.sdei.set_bind_slots(5, 2)
    assert run_script([(F.FEATURES, 0)], m) == [0x00020005]


def test_register_rejects_bad_arguments_in_tf_a_order():
    m, h = script_machine()
    r = run_script([
        (F.EVENT_REGISTER, 0, 0, 0, 0, 0),  # entry point 0
        (F.EVENT_REGISTER, 0, 0x10000, 0, 0, 0),  # entry point outside guest RAM
        (F.EVENT_REGISTER, 0x12345, h, 0, 0, 0),  # no such event
        (F.EVENT_REGISTER, 0x80000000, h, 0, 0, 0),  # bit 31 set
        (F.EVENT_REGISTER, 1 << 32, h, 0, 0, 0),  # not a 32-bit number
        (F.EVENT_REGISTER, 0, h, 0, 2, 0),  # relative mode
        (F.EVENT_REGISTER, 0, h, 0, 4, 0),  # reserved flag bits
        (F.EVENT_REGISTER, 0, h, 0, 1, 0x99),  # RM_PE to no PE (checked even for private events)
        (F.EVENT_REGISTER, 0, 0, 0, 2, 0),  # flags are checked before the entry point
        (F.EVENT_REGISTER, P0, h, 0, 0, 0),  # a dynamic event not bound
        (F.EVENT_REGISTER, 0, h, 0, 1, 0),  # RM_PE to itself: fine for a private event
        (F.EVENT_REGISTER, 0, h, 0, 0, 0),  # registered already
    ], m)
    assert r == [INVALID] * 9 + [DENIED, OK, DENIED]


def test_enable_disable_status_unregister_and_unknown_events():
    m, h = script_machine()
    r = run_script([
        (F.EVENT_STATUS, 0), (F.EVENT_REGISTER, 0, h, 7, 0, 0), (F.EVENT_STATUS, 0),
        (F.EVENT_ENABLE, 0), (F.EVENT_STATUS, 0), (F.EVENT_ENABLE, 0),
        (F.EVENT_DISABLE, 0), (F.EVENT_STATUS, 0), (F.EVENT_DISABLE, 0),
        (F.EVENT_UNREGISTER, 0), (F.EVENT_STATUS, 0), (F.EVENT_UNREGISTER, 0),
        (F.EVENT_ENABLE, 0x777), (F.EVENT_DISABLE, 0x777), (F.EVENT_STATUS, 0x777), (F.EVENT_UNREGISTER, 0x777),
        (F.EVENT_GET_INFO, 0x777, 0), (F.EVENT_ENABLE, 0x80000000),
    ], m)
    assert r == [0, OK, 1, OK, 3, OK, OK, 1, OK, OK, 0, DENIED] + [INVALID] * 6


def test_context_complete_and_resume_without_a_running_handler():
    assert run_script([(F.EVENT_CONTEXT, 0), (F.EVENT_CONTEXT, 17), (F.EVENT_CONTEXT, 18),
                       (F.EVENT_COMPLETE, 0), (F.EVENT_COMPLETE_AND_RESUME, 0x40000000)]) == [
        DENIED, DENIED, INVALID, DENIED, DENIED]


def test_pe_mask_returns_one_only_when_it_masked_an_unmasked_pe():
    assert run_script([(F.PE_MASK,), (F.PE_UNMASK,), (F.PE_UNMASK,), (F.PE_MASK,), (F.PE_MASK,)]) == [
        0, OK, OK, 1, 0]  # PEs start masked


def test_get_info_of_private_and_shared_events():
    m, h = script_machine()
    m.vm.sdei.expose(0x400010, critical=True)
    r = run_script([
        (F.EVENT_GET_INFO, 0, 0), (F.EVENT_GET_INFO, 0, 1), (F.EVENT_GET_INFO, 0, 2),
        (F.EVENT_GET_INFO, 0, 3), (F.EVENT_GET_INFO, 0, 4), (F.EVENT_GET_INFO, 0, 5),
        (F.EVENT_GET_INFO, 0x400010, 2), (F.EVENT_GET_INFO, 0x400010, 1),
        (F.INTERRUPT_BIND, 40),
        (F.EVENT_GET_INFO, S0, 0), (F.EVENT_GET_INFO, S0, 3),  # shared, not registered
        (F.EVENT_REGISTER, S0, h, 0, 0, 0),
        (F.EVENT_GET_INFO, S0, 3), (F.EVENT_GET_INFO, S0, 4),  # RM_ANY: no affinity
        (F.EVENT_ROUTING_SET, S0, 1, 0),
        (F.EVENT_GET_INFO, S0, 3), (F.EVENT_GET_INFO, S0, 4),
    ], m)
    assert r == [0, 1, 0, INVALID, INVALID, INVALID, 1, 0, S0, 1, DENIED, OK, 0, INVALID, OK, 1, 0]


def test_routing_set_rules():
    m, h = script_machine()
    r = run_script([
        (F.INTERRUPT_BIND, 33), (F.EVENT_ROUTING_SET, S0, 0, 0),  # unregistered: DENIED
        (F.EVENT_REGISTER, S0, h, 0, 1, 0),  # RM_PE to vCPU 0
        (F.EVENT_ROUTING_SET, S0, 2, 0), (F.EVENT_ROUTING_SET, S0, 1, 0x99), (F.EVENT_ROUTING_SET, 0, 0, 0),
        (F.EVENT_ROUTING_SET, S0, 0, 0x99),  # RM_ANY ignores the affinity
        (F.EVENT_ENABLE, S0), (F.EVENT_ROUTING_SET, S0, 1, 0),  # enabled: DENIED
    ], m)
    assert r == [S0, DENIED, OK, INVALID, INVALID, INVALID, OK, OK, DENIED]


def test_interrupt_bind_and_release():
    m, h = script_machine()
    r = run_script([
        (F.INTERRUPT_BIND, 0), (F.INTERRUPT_BIND, 15), (F.INTERRUPT_BIND, 1020), (F.INTERRUPT_BIND, 2**40),
        (F.INTERRUPT_BIND, 16), (F.INTERRUPT_BIND, 16), (F.INTERRUPT_BIND, 17), (F.INTERRUPT_BIND, 1019),
        (F.INTERRUPT_RELEASE, 0), (F.INTERRUPT_RELEASE, P0 + 2), (F.INTERRUPT_RELEASE, 0x777),
        (F.EVENT_REGISTER, P0, h, 0, 0, 0), (F.INTERRUPT_RELEASE, P0),  # registered: DENIED
        (F.EVENT_UNREGISTER, P0), (F.INTERRUPT_RELEASE, P0), (F.INTERRUPT_RELEASE, P0),
        (F.INTERRUPT_BIND, 20),  # the freed slot is used again
    ], m)
    assert r == [INVALID] * 4 + [P0, P0, P1, S0] + [INVALID] * 3 + [OK, DENIED, OK, OK, INVALID, P0]


def test_signal_checks_its_arguments_and_the_target():
    m, h = script_machine(cpus=2)
    r = run_script([
        (F.EVENT_SIGNAL, 1, 0), (F.EVENT_SIGNAL, 0, 0x99), (F.EVENT_SIGNAL, 0, 1 << 40),
        (F.EVENT_SIGNAL, 0, 0),  # masked and not registered
        (F.EVENT_SIGNAL, 0, 1),  # vCPU 1 is off, so masked
    ], m)
    assert r == [INVALID] * 5


def test_private_and_shared_reset():
    m, h = script_machine()
    r = run_script([
        (F.EVENT_REGISTER, 0, h, 0, 0, 0), (F.EVENT_ENABLE, 0), (F.INTERRUPT_BIND, 40), (F.INTERRUPT_BIND, 18),
        (F.EVENT_REGISTER, S0, h, 0, 0, 0), (F.EVENT_REGISTER, P0, h, 0, 0, 0),
        (F.PRIVATE_RESET,), (F.EVENT_STATUS, 0), (F.EVENT_STATUS, P0), (F.EVENT_STATUS, S0),
        (F.SHARED_RESET,), (F.EVENT_STATUS, S0), (F.INTERRUPT_RELEASE, S0), (F.INTERRUPT_RELEASE, P0),
        (F.SHARED_RESET,),
    ], m)
    assert r == [OK, OK, S0, P0, OK, OK, OK, 0, 0, 1, OK, 0, INVALID, INVALID, OK]


def test_register_runs_out_of_resource_past_the_v5_event_limit():
    m, h = script_machine()
    for i in range(127):  # with event 0, KVM_SDEI_MAX_EVENTS = 128 exposed events
        m.vm.sdei.expose(0x400100 + i)
    calls = [(F.EVENT_REGISTER, 0, h, 0, 0, 0)] + [(F.EVENT_REGISTER, 0x400100 + i, h, 0, 0, 0) for i in range(127)]
    calls += [(F.INTERRUPT_BIND, 16), (F.EVENT_REGISTER, P0, h, 0, 0, 0),
              (F.EVENT_UNREGISTER, 0x400100), (F.EVENT_REGISTER, P0, h, 0, 0, 0)]
    r = run_script(calls, m)
    assert r[:128] == [OK] * 128
    assert r[128:] == [P0, OUT_OF_RESOURCE, OK, OK]


def test_sdei_answers_not_supported_without_the_capability():
    from sandbox import Cap, Vm
    vm = Vm()
    vm.set_capability(Cap.ARM_SDEI, False)
    m, h = script_machine(vm=vm)
    assert run_script([(F.VERSION,), (F.EVENT_REGISTER, 0, h, 0, 0, 0)], m) == [NOT_SUPPORTED] * 2
