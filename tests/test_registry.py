"""The plug-in registry: one ``register`` for every kind, and the key as each plug-in's only name."""

from __future__ import annotations

import pytest

from safealign.data.formats import PREFERENCE_FORMATS
from safealign.data.transforms import TRANSFORMS
from safealign.eval.registries import ATTACKS, BACKENDS, JUDGES
from safealign.losses import LOSSES
from safealign.registry import RegisteredName, Registry

ALL = {"attack": ATTACKS, "judge": JUDGES, "backend": BACKENDS, "loss": LOSSES, "prompt transform": TRANSFORMS,
       "format": PREFERENCE_FORMATS}


class Widget:
    pass


class Base:
    name = RegisteredName(Registry("unused"))


@pytest.mark.parametrize("kind", list(ALL))
def test_every_registered_plugin_answers_to_its_key(kind):
    registry = ALL[kind]
    assert registry.kind == kind and registry.names()
    for key in registry.names():
        plugin = registry.get(key)
        assert registry.name_of(plugin) == key
        if isinstance(plugin, type) and hasattr(plugin, "name"):
            assert plugin.name == key  # attacks, judges, transforms: read from the registry, never written


def test_lazy_entry_is_named_before_and_after_loading():
    reg: Registry[type] = Registry("widget")
    reg.register("w", f"{__name__}:Widget")
    assert reg.name_of(Widget) == "w"  # before the import: matched by module:qualname
    assert reg.get("w") is Widget and reg.name_of(Widget) == "w"


def test_decorator_and_object_forms_are_the_same_register():
    reg: Registry[type] = Registry("widget")

    @reg.register("deco", colour="red")
    class Deco(Base):
        name = RegisteredName(reg)

    assert reg.get("deco") is Deco and Deco.name == "deco" and Deco().name == "deco"
    assert reg.meta("deco") == {"colour": "red"}
    assert reg.register("plain", Widget) is Widget and reg.names() == ["deco", "plain"]


def test_registry_refuses_conflicts_and_unknowns():
    reg: Registry[type] = Registry("widget")
    reg.register("w", Widget)
    with pytest.raises(ValueError, match="widget 'w' is already registered"):
        reg.register("w", Base)
    with pytest.raises(ValueError, match="lazy widget target must be 'module:attr'"):
        reg.register("x", "no.colon")
    with pytest.raises(ValueError, match=r"unknown widget 'v'; valid names: w$"):
        reg.get("v")
    with pytest.raises(ValueError, match="is not a registered widget"):
        reg.name_of(Base)
    reg.register("w", Widget)  # registering the same object again is harmless
