"""One implementation per training method, registered once, agreeing with the documents that name methods."""

import typing

from gatekeeper.bundle.manifest import FULL_WEIGHT_METHODS, AdapterRef, MethodName
from gatekeeper.bundle.recipe import Recipe
from gatekeeper.training.methods import METHODS, get_method


def test_every_method_the_schema_names_has_one_implementation():
    named = set(typing.get_args(MethodName))
    assert set(METHODS) == named
    assert typing.get_args(Recipe.model_fields["method"].annotation) == typing.get_args(MethodName)
    assert typing.get_args(AdapterRef.model_fields["method"].annotation) == typing.get_args(MethodName)


def test_a_methods_adapter_kind_is_what_bundles_accept_for_it():
    for name, method in METHODS.items():
        assert (method.adapter_kind == "delta") == (name in FULL_WEIGHT_METHODS)
        AdapterRef(method=name, kind="lora" if method.adapter_kind == "lora" else "delta", files={})


def test_qlora_alone_is_served_over_a_4bit_base():
    assert {n for n, m in METHODS.items() if m.serving_quantization != "none"} == {"qlora"}
    assert get_method("qlora").serving_quantization == "nf4"
