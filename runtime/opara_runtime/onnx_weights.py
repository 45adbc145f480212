"""Reading an ONNX model's initializers (the weights of its param nodes) at deploy time; onnx is imported lazily."""
from __future__ import annotations

from pathlib import Path

import torch

from opara_plan import ModelError

# ONNX TensorProto element type -> torch dtype, for the types a plan can hold (not: strings, float8, int4,
# which the plan format and ATen lack). The importer uses the same table.
ONNX_DTYPES = {1: torch.float32, 2: torch.uint8, 3: torch.int8, 4: torch.uint16, 5: torch.int16, 6: torch.int32,
               7: torch.int64, 9: torch.bool, 10: torch.float16, 11: torch.float64, 12: torch.uint32,
               13: torch.uint64, 16: torch.bfloat16}


def read_onnx(path: Path, *, external_data: bool):
    """onnx.load with the missing-file and unreadable-file cases as ModelError; the compiler reads with it too."""
    import onnx
    from google.protobuf.message import DecodeError

    if not path.is_file():
        raise ModelError(f"ONNX model {str(path)!r}: no such file")
    if path.stat().st_size == 0:
        raise ModelError(f"ONNX model {str(path)!r} is empty (0 bytes), not an ONNX model")
    try:
        model = onnx.load(str(path), load_external_data=external_data)
    except DecodeError as e:
        raise ModelError(f"{str(path)!r} is not an ONNX model: it does not parse as an onnx ModelProto ({e})") from None
    except Exception as e:
        raise ModelError(f"ONNX model {str(path)!r} cannot be read: {e}") from None
    if not model.ir_version or not model.HasField("graph"):  # protobuf reads some foreign bytes as an empty model
        raise ModelError(f"{str(path)!r} is not an ONNX model: expected an ir_version and a graph, found "
                         f"{'no ir_version' if not model.ir_version else 'no graph'}")
    return model


def onnx_weights(path: Path) -> dict[str, torch.Tensor]:
    """Initializer name -> CPU tensor, external data read relative to the model's folder.

    The names are those the ONNX importer gives param nodes. Initializers whose element type a plan
    cannot hold (strings, float8...) are left out: the importer refuses models that compute with them.
    """
    import numpy as np
    import onnx
    from onnx import numpy_helper

    path = Path(path)
    model = read_onnx(path, external_data=False)
    weights: dict[str, torch.Tensor] = {}
    for init in model.graph.initializer:
        if init.data_type not in ONNX_DTYPES:
            continue
        try:
            if init.data_location == onnx.TensorProto.EXTERNAL:
                onnx.external_data_helper.load_external_data_for_tensor(init, str(path.parent))
            array = numpy_helper.to_array(init)
        except Exception as e:
            raise ModelError(f"ONNX model {str(path)!r}: initializer {init.name!r} cannot be read "
                             f"(external data is looked up next to the model): {e}") from None
        if init.data_type == 16:  # bfloat16 arrives as raw bits
            weights[init.name] = torch.from_numpy(array.view(np.uint16).copy()).view(torch.bfloat16)
        else:
            weights[init.name] = torch.from_numpy(np.array(array, copy=True)).to(ONNX_DTYPES[init.data_type])
    return weights
