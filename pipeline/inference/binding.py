"""Running an onnxruntime session through I/O binding: inputs and outputs bound on its device.

``session.run`` copies each numpy input to the provider's device and each output back, through
onnxruntime's own staging buffers. With I/O binding the caller places the input on the session's
device once (an ``OrtValue`` there, or a torch CUDA tensor used in place) and the outputs are
allocated on that device, copied to the host only when asked. On the CUDA provider that saves a
staging copy per tensor and lets a torch producer hand its tensor over without a host round trip;
on the CPU provider the same code runs with ``device="cpu"`` and gives what ``session.run`` gives
(the tests check that the two agree exactly).

Example:
    >>> import numpy as np, onnx
    >>> from onnx import TensorProto, helper
    >>> graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
    ...                           [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 2])],
    ...                           [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 2])])
    >>> import onnxruntime as ort
    >>> model = helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17)])
    >>> session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    >>> run = BoundRunner(session, "x", ["y"])
    >>> run.device, run(np.array([[-1.0, 2.0]], np.float32))[0].tolist()
    ('cpu', [[0.0, 2.0]])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    import onnxruntime as ort
    import torch

# onnxruntime provider -> the device name its OrtValues and bindings use
PROVIDER_DEVICES: dict[str, str] = {"CUDAExecutionProvider": "cuda", "CPUExecutionProvider": "cpu"}


def session_device(session: ort.InferenceSession) -> str:
    """``cuda`` when the session's first provider is CUDA, else ``cpu``."""
    return PROVIDER_DEVICES.get(session.get_providers()[0], "cpu")


class BoundRunner:
    """One-input session run through I/O binding on ``device`` (default: the session's device).

    Call it with a float32 numpy array (placed on the device once) or, on CUDA, a contiguous
    float32 torch CUDA tensor (bound in place); it returns the outputs as host numpy arrays in
    ``output_names`` order, or the device ``OrtValue`` s with :meth:`run_on_device`.
    """

    def __init__(self, session: ort.InferenceSession, input_name: str, output_names: Sequence[str],
                 device: str | None = None, device_id: int = 0) -> None:
        self.session, self.input_name, self.output_names = session, input_name, list(output_names)
        self.device = device or session_device(session)
        if self.device not in PROVIDER_DEVICES.values():
            raise ValueError(f"I/O binding device must be one of {sorted(set(PROVIDER_DEVICES.values()))}, "
                             f"got {self.device!r}")
        self.device_id = device_id if self.device == "cuda" else 0

    def run_on_device(self, images: np.ndarray | torch.Tensor) -> list[ort.OrtValue]:
        """Run on ``images`` and return the outputs left on the device (``OrtValue`` s)."""
        return self._run(images).get_outputs()

    def __call__(self, images: np.ndarray | torch.Tensor) -> list[np.ndarray]:
        """The outputs for ``images``, copied to the host."""
        return list(self._run(images).copy_outputs_to_cpu())

    def _run(self, images: np.ndarray | torch.Tensor) -> ort.IOBinding:
        """Bind ``images`` and the outputs on the device, run, and return the binding holding the outputs."""
        import onnxruntime as ort

        binding = self.session.io_binding()
        if isinstance(images, np.ndarray):
            value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(images, dtype=np.float32), self.device,
                                                     self.device_id)
            binding.bind_ortvalue_input(self.input_name, value)
        else:
            self._bind_tensor(binding, images)
        for name in self.output_names:
            binding.bind_output(name, self.device, self.device_id)
        binding.synchronize_inputs()
        self.session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return binding

    def _bind_tensor(self, binding: ort.IOBinding, tensor: torch.Tensor) -> None:
        """Bind a torch tensor's memory as the input (no copy); it must live where the session computes."""
        import torch

        if tensor.dtype != torch.float32 or not tensor.is_contiguous():
            raise ValueError(f"a bound input tensor must be contiguous float32, got {tensor.dtype} "
                             f"(contiguous: {tensor.is_contiguous()})")
        if tensor.device.type != self.device:
            raise ValueError(f"the input tensor is on {tensor.device}, the session computes on {self.device}")
        binding.bind_input(self.input_name, self.device, tensor.device.index or 0, np.float32,
                           list(tensor.shape), tensor.data_ptr())
