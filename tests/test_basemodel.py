"""Converting the embedded GGUF base: parsed once per conversion, the ``gguf`` package left as found."""


def write_tiny_gguf(path):
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 2), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_a_conversion_parses_the_gguf_once_and_restores_the_package(tmp_path):
    import gguf

    from gatekeeper.bundle.base import _gguf_parsed_once

    path = tmp_path / "tiny.gguf"
    write_tiny_gguf(path)
    reader_class, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    with _gguf_parsed_once():
        first = gguf.GGUFReader(str(path))
        assert gguf.GGUFReader(str(path)) is first  # the config, tokenizer and weights reads share one parse
        assert gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 1) is gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 1)
        assert "token_embd.weight" in [t.name for t in first.tensors]
    assert gguf.GGUFReader is reader_class and gguf.get_tensor_name_map is name_map
    assert gguf.GGUFReader(str(path)) is not first
