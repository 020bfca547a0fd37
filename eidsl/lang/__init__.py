"""The language: .ei text -> syntax tree -> elaborated, checked graph IR.

parser (Lark grammar in grammar.lark) -> syntax (the tree) -> elaborate (the interpreter, with the
vocabulary of builtins) -> checks (shapes, Dale's law, reachability, fan-in, sizes).
"""
