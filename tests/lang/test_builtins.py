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
