"""The language's vocabulary (eidsl/lang/builtins.py): one table, every word documented and known
to the tools that list words (highlighting, the formatter's keyword list)."""
from eidsl.lang import builtins as B
from eidsl.tools import highlight


def test_every_word_a_spec_can_call_or_name_as_a_rule_is_documented():
    words = B.callable_words() | B.INIT_RULES
    assert not words - set(B.WORDS), sorted(words - set(B.WORDS))
    assert not set(B.WORDS) - words, sorted(set(B.WORDS) - words)   # no documentation of a word that is gone


def test_the_highlighter_lists_exactly_the_vocabulary():
    assert highlight.builtins() == B.callable_words()
    assert highlight.constants() == set(B.SYMBOLS) - highlight.keywords()


def test_python_values_become_spec_values():
    assert B.from_python(("ei_balanced", 3)) == ["ei_balanced", 3]
    assert isinstance(B.from_python("soft"), B.Sym) and not isinstance(B.from_python("mlp"), B.Sym)


def test_every_projection_kind_says_how_it_becomes_an_ir_record():
    kinds = {k for table in B.PROJECTION_KINDS.values() for k in table}
    assert kinds == set(B.KIND_RECORDS)
    for name, kind in B.KIND_RECORDS.items():
        arrow = "-|" if kind.record is B.ir.Inhibition else "->"
        assert name in B.PROJECTION_KINDS[arrow]
        fields = set(kind.record.model_fields)
        assert set(kind.renames.values()) | set(kind.fixed) <= fields, name
        assert {kind.renames.get(a, a) for a in B.PROJECTION_KINDS[arrow][name]} <= fields, name


def test_shunt_is_divisive_normalisation_with_a_semi_saturation_constant(tmp_path):
    """`I -| E : shunt(sigma = s)` computes g_E I_EE / (s + W_EI (g_I s_I)) + b_E, which is what the
    general inhibition writes as inhibit(sub = false, div = true, stabilize = epsilon, epsilon = s)."""
    import torch
    from eidsl.api import build, load_graph
    body = ("network n(T = 2) {{\n    x = flatten(image([1, 4, 4]))\n    exc E = lif(8, gain = 1, bias = 0)\n"
            "    inh I = relu(4, gain = 1)\n    x -> E : dense()\n    x -> I : dense()\n    I -| E : {}\n"
            "    return readout(E)\n}}\n")
    shunt, general = tmp_path / "shunt.ei", tmp_path / "general.ei"
    shunt.write_text(body.format("shunt(sigma = 0.5, init = 0.25)"))
    general.write_text(body.format("inhibit(sub = false, div = true, stabilize = epsilon, epsilon = 0.5, init = 0.25)"))
    edge = load_graph(shunt).edge("I", "E")
    assert (edge.subtractive, edge.divisive, edge.stabilize, edge.epsilon) == (False, True, "epsilon", 0.5)
    x = torch.rand(3, 1, 4, 4)
    a, b = build(shunt, seed=1), build(general, seed=1)
    env = a.run(x, keep=True)
    assert torch.equal(a(x), b(x))
    # The formula itself, from the network's own tensors.
    W_EI, I_EE = a.tensor("E.W_EI"), env["E<-flatten_1"]
    s_I = env["I"]
    expected = a.tensor("E.g_E") * I_EE / (0.5 + s_I @ (W_EI * a.tensor("I.g_I")).T) + a.tensor("E.b_E")
    assert torch.allclose(env["E:I_int"], expected, rtol=1e-6, atol=1e-7)
