"""The module's GUI state (parameter node) and its mapping onto SwinBOBLib's configurations.

One table, :data:`PARAMETERS`, lists every parameter with its type and default. From it come

* :func:`parameterNodeWrapperClass`: the typed ``@parameterNodeWrapper`` class when Slicer provides
  ``slicer.parameterNodeWrapper`` (the application); its fields bind to the .ui widgets whose
  ``SlicerParameterName`` property names them;
* :class:`PlainParameterNode`: the same fields stored as strings and node references on a
  ``vtkMRMLScriptedModuleNode`` (slicer-core, tests, older Slicer).

:class:`SegmentationOptions` is what the Logic takes; it maps onto :class:`InferenceConfig` /
:class:`EttaConfig` (in-process) and onto ``swinbob segment`` options (background process), so the
library's dataclasses stay the one source of defaults.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields

#: Devices the user can choose (``cuda:N`` is accepted too).
DEVICES = ("auto", "cuda", "cpu")
#: Defaults of InferenceConfig.fast / .etta and EttaConfig.steps / .lr, repeated here so that this
#: file imports without torch (the widget binds parameters before dependencies are installed);
#: a test keeps them equal to the library's.
FAST, ETTA, ETTA_STEPS, ETTA_LR = False, False, 1, 3e-3


@dataclass(frozen=True)
class Parameter:
    """One parameter of the module's parameter node.

    ``type`` is a Python type, or for node references an MRML class name or a tuple of names (a
    union). Node classes must be concrete: Slicer's node-combobox connector instantiates them to
    read their class names (``slicer/parameterNodeWrapper/util.py`` ``getNodeTypes``), and an
    abstract class such as ``vtkMRMLVolumeNode`` raises there, so the panel would never bind.
    ``minimum``/``maximum`` bound numbers: the wrapper's spin-box connectors replace the .ui's
    limits with these (unbounded when none are declared); ``decimals``/``step`` are the .ui's
    (a test keeps the two equal).
    """

    name: str
    type: type | str | tuple
    default: object
    description: str
    minimum: float | None = None
    maximum: float | None = None
    decimals: int | None = None
    step: float | None = None
    #: Whether subclasses of ``type`` are offered too (``qMRMLNodeComboBox.showChildNodeTypes``):
    #: vector, tensor and label-map volumes all derive from ``vtkMRMLScalarVolumeNode``.
    childTypes: bool = True
    #: ``(name, value)`` a node must carry as an attribute (``qMRMLNodeComboBox.addAttribute``).
    attribute: tuple[str, str] | None = None

    @property
    def isNode(self) -> bool:
        return isinstance(self.type, (str, tuple))

    @property
    def nodeTypes(self) -> tuple[str, ...]:
        """MRML class names a node parameter accepts (empty for plain values)."""
        if not self.isNode:
            return ()
        return (self.type,) if isinstance(self.type, str) else tuple(self.type)

    def offers(self, node) -> bool:
        """Whether the parameter's node selector lists ``node``: the filter of Slicer's
        ``qMRMLSortFilterProxyModel::filterAcceptsNode`` (node types, child types, attribute)."""
        for name in self.nodeTypes:
            if not node.IsA(name) or (not self.childTypes and node.GetClassName() != name):
                continue
            return self.attribute is None or node.GetAttribute(self.attribute[0]) == self.attribute[1]
        return False

    def accepts(self, value) -> bool:
        """Whether ``value`` may be stored: a node its selector offers (or None), a number in range."""
        if self.isNode:
            return value is None or self.offers(value)
        if self.type in (int, float) and value is not None:
            return ((self.minimum is None or value >= self.minimum)
                    and (self.maximum is None or value <= self.maximum))
        return True


#: Node attribute naming what a node is to the module ("entropy", "organs"; set by :mod:`.nodes`),
#: defined here for the entropy selector's filter, so that this file stays free of MRML code.
ROLE_ATTRIBUTE, ENTROPY_ROLE = "SwinBOB.Role", "entropy"
ENTROPY_ATTRIBUTE = (ROLE_ATTRIBUTE, ENTROPY_ROLE)
#: Volume classes the input may be (concrete ones: see :class:`Parameter`).
INPUT_VOLUME_TYPES = ("vtkMRMLScalarVolumeNode", "vtkMRMLVectorVolumeNode")

#: Every parameter of the module's parameter node.
PARAMETERS = (
    Parameter("inputVolume", INPUT_VOLUME_TYPES, None, "scan to segment (scalar or multi-channel volume)",
              childTypes=False),
    Parameter("contrast", str, "",
              "channel name(s)/index(es) the checkpoint expects, e.g. water; empty: the checkpoint's"),
    Parameter("checkpointPath", str, "", "Swin-BOB / MONAI checkpoint (.pt); empty: the bundled demo model"),
    Parameter("device", str, "auto", "auto, cuda, cuda:N or cpu"),
    Parameter("fast", bool, FAST, "coarser grid, no window overlap"),
    Parameter("structures", str, "", "comma-separated structure names or groups; empty: all"),
    Parameter("etta", bool, ETTA, "entropy test-time adaptation before the final pass"),
    Parameter("ettaSteps", int, ETTA_STEPS, "ETTA gradient steps", minimum=1, maximum=100),
    Parameter("ettaLearningRate", float, ETTA_LR, "ETTA learning rate", minimum=1e-6, maximum=1.0, decimals=6,
              step=1e-4),
    Parameter("boundsPath", str, "", "SOLF bounds (.json); empty: the bundled default bounds"),
    Parameter("show3D", bool, True, "build closed surfaces of the segments for the 3D view after a run"),
    Parameter("showSegmentFill", bool, True, "segments filled in the slice views"),
    Parameter("segmentFillOpacity", float, 0.5, "opacity of the segments' fill in the slice views (0-1)",
              minimum=0.0, maximum=1.0, decimals=2, step=0.05),
    Parameter("showEntropy", bool, True, "entropy map as the slice views' foreground overlay"),
    Parameter("entropyOpacity", float, 0.45, "opacity of the entropy overlay (0-1)",
              minimum=0.0, maximum=1.0, decimals=2, step=0.05),
    Parameter("segmentation", "vtkMRMLSegmentationNode", None, "result: one segment per structure"),
    Parameter("entropyVolume", "vtkMRMLScalarVolumeNode", None, "result: normalised entropy map",
              childTypes=False, attribute=ENTROPY_ATTRIBUTE),
    Parameter("organTable", "vtkMRMLTableNode", None, "result: per-organ measurements and SOLF verdict"),
)
PARAMETER_NAMES = tuple(p.name for p in PARAMETERS)


def annotationOf(parameter: Parameter, slicerModule=None, wrapperModule=None):
    """The type annotation of a parameter for ``@parameterNodeWrapper``.

    A node parameter of several types is ``Union[A, B, None]`` (the None is what lets the wrapper
    store "no node"; ``slicer/parameterNodeWrapper/util.py`` ``isNodeOrUnionOfNodes``); a bounded
    number is ``Annotated[type, WithinRange(minimum, maximum)]``, because the wrapper's spin-box and
    slider connectors overwrite the widget's limits with the annotation's (unbounded without one).
    Decimals and steps stay in the .ui (the connectors keep them unless annotated, and the wrapper
    logs "Unused annotations" for such GUI-only annotations).
    """
    import typing

    if parameter.isNode:
        if slicerModule is None:
            import slicer as slicerModule
        classes = tuple(getattr(slicerModule, name) for name in parameter.nodeTypes)
        return classes[0] if len(classes) == 1 else typing.Union[(*classes, type(None))]
    if wrapperModule is None or parameter.type not in (int, float) or parameter.minimum is None:
        return parameter.type
    return typing.Annotated[parameter.type, wrapperModule.WithinRange(parameter.minimum, parameter.maximum)]


@functools.lru_cache(maxsize=1)
def parameterNodeWrapperClass():
    """The typed parameter-node class (``@parameterNodeWrapper``), or None outside the application."""
    try:
        import slicer
        from slicer import parameterNodeWrapper as wrapperModule
    except ImportError:
        return None
    annotations, defaults = {}, {}
    for p in PARAMETERS:
        annotations[p.name] = annotationOf(p, slicer, wrapperModule)
        if not p.isNode:
            defaults[p.name] = p.default
    namespace = {"__annotations__": annotations, "__doc__": "SwinBOB GUI state.", **defaults}
    return wrapperModule.parameterNodeWrapper(type("SwinBOBParameterNode", (), namespace))


class PlainParameterNode:
    """The parameters on a ``vtkMRMLScriptedModuleNode``: attribute access like the typed wrapper.

    Values are stored as the node's parameters (strings) and node references; reading converts
    back to the declared type, and unset parameters read as their defaults.
    """

    def __init__(self, node):
        object.__setattr__(self, "parameterNode", node)
        object.__setattr__(self, "_spec", {p.name: p for p in PARAMETERS})

    def __getattr__(self, name):
        spec = self._spec.get(name)
        if spec is None:
            raise AttributeError(f"no SwinBOB parameter '{name}' (parameters: {', '.join(PARAMETER_NAMES)})")
        if spec.isNode:
            return self.parameterNode.GetNodeReference(name)
        text = self.parameterNode.GetParameter(name)
        if text == "":
            return spec.default
        if spec.type is bool:
            return text.lower() in ("1", "true")
        return spec.type(text)

    def __setattr__(self, name, value):
        spec = self._spec.get(name)
        if spec is None:
            raise AttributeError(f"no SwinBOB parameter '{name}' (parameters: {', '.join(PARAMETER_NAMES)})")
        if not spec.accepts(value):
            expected = (" or ".join(spec.nodeTypes) if spec.isNode else
                        f"a value in [{spec.minimum}, {spec.maximum}]")
            got = value.GetClassName() if spec.isNode else repr(value)
            raise ValueError(f"parameter {name}: expected {'a ' if spec.isNode else ''}{expected}, got {got}")
        if spec.isNode:
            self.parameterNode.SetNodeReferenceID(name, value.GetID() if value is not None else None)
        elif spec.type is bool:
            self.parameterNode.SetParameter(name, "true" if value else "false")
        else:
            self.parameterNode.SetParameter(name, str(spec.type(value)))


def selectableNodes(scene, parameter: Parameter) -> list:
    """The nodes of ``scene`` the parameter's node selector lists, in scene order."""
    collection = scene.GetNodesByClass(parameter.nodeTypes[0]) if len(parameter.nodeTypes) == 1 else scene.GetNodes()
    found = (collection.GetItemAsObject(i) for i in range(collection.GetNumberOfItems()))
    return [node for node in found if not node.GetHideFromEditors() and parameter.offers(node)]


def parameterNamed(name: str) -> Parameter:
    """The :data:`PARAMETERS` entry called ``name`` (KeyError naming the known ones)."""
    for entry in PARAMETERS:
        if entry.name == name:
            return entry
    raise KeyError(f"no SwinBOB parameter '{name}' (parameters: {', '.join(PARAMETER_NAMES)})")


def wrapParameterNode(node):
    """The typed wrapper of ``node`` in the application, else a :class:`PlainParameterNode`."""
    wrapper = parameterNodeWrapperClass()
    return wrapper(node) if wrapper is not None else PlainParameterNode(node)


@dataclass
class SegmentationOptions:
    """What one segmentation run uses; see :data:`PARAMETERS` for each field's meaning."""

    checkpointPath: str = ""
    contrast: str = ""
    device: str = "auto"
    fast: bool = FAST
    structures: str = ""
    etta: bool = ETTA
    ettaSteps: int = ETTA_STEPS
    ettaLearningRate: float = ETTA_LR
    boundsPath: str = ""
    seed: int = 0

    @classmethod
    def fromParameters(cls, parameters) -> "SegmentationOptions":
        """Options from a (typed or plain) parameter node."""
        return cls(**{f.name: getattr(parameters, f.name) for f in fields(cls) if f.name in PARAMETER_NAMES})

    def validate(self) -> None:
        """Raise ValueError naming the bad value."""
        device = self.device.strip().lower()
        if device not in DEVICES and not (device.startswith("cuda:") and device[5:].isdigit()) and device != "mps":
            raise ValueError(f"device '{self.device}': use auto, cuda, cuda:N, mps or cpu")
        if self.etta and self.ettaSteps < 1:
            raise ValueError(f"ETTA steps must be at least 1, got {self.ettaSteps}")
        if self.etta and not self.ettaLearningRate > 0:
            raise ValueError(f"ETTA learning rate must be positive, got {self.ettaLearningRate}")

    def inferenceConfig(self):
        """The library's :class:`InferenceConfig` for these options (in-process path)."""
        from SwinBOBLib.inference import InferenceConfig

        return InferenceConfig(device=self.device.strip().lower() or "auto", fast=self.fast, etta=self.etta,
                               structures=self.structures.strip() or None,
                               contrast=self.contrast.strip() or None, seed=self.seed)

    def ettaConfig(self):
        """The library's :class:`EttaConfig` for these options."""
        from SwinBOBLib.inference.etta import EttaConfig

        return EttaConfig(steps=int(self.ettaSteps), lr=float(self.ettaLearningRate), seed=self.seed)

    def commandLineOptions(self) -> list[str]:
        """The same options as ``swinbob segment`` arguments (background path)."""
        args = ["--device", self.device.strip().lower() or "auto", "--seed", str(self.seed)]
        if self.fast:
            args.append("--fast")
        if self.structures.strip():
            args += ["--structures", self.structures.strip()]
        if self.contrast.strip():
            args += ["--contrast", self.contrast.strip()]
        if self.etta:
            args += ["--etta", "--etta-steps", str(int(self.ettaSteps)),
                     "--etta-lr", repr(float(self.ettaLearningRate))]
        return args
