"""A random-init CLAP model with the layout of ``laion/clap-htsat-unfused`` (HTSAT audio tower, RoBERTa text
tower, 48 kHz feature extractor), tiny enough to build in a second, saved as a Hub repository folder."""

from __future__ import annotations

from pathlib import Path

WORDS = ["a dog barking", "a door closing", "rain on a roof", "a car engine", "a bell ringing"]


def write_tiny_clap(folder: Path, seed: int = 0) -> Path:
    """Write ``config.json``, weights, tokenizer and preprocessor files into ``folder``; returns it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, RobertaTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(WORDS, trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    fast = RobertaTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        mask_token="<mask>",
    )  # fmt: skip
    config = ClapConfig(
        text_config={
            "vocab_size": fast.vocab_size, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
            "intermediate_size": 37, "max_position_embeddings": 64, "pad_token_id": 1,
        },
        audio_config={
            "hidden_size": 32, "num_mel_bins": 64, "depths": [1, 1], "num_attention_heads": [2, 2],
            "patch_embeds_hidden_size": 16, "spec_size": 256, "window_size": 8, "num_hidden_layers": 2,
            "patch_stride": [4, 4], "patch_size": 4, "enable_fusion": False,
        },
        projection_dim=16,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = ClapModel(config).eval()
    extractor = ClapFeatureExtractor(
        feature_size=64, sampling_rate=48000, hop_length=480, max_length_s=10, fft_window_size=1024,
        truncation="rand_trunc", padding="repeatpad",
    )  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    ClapProcessor(feature_extractor=extractor, tokenizer=fast).save_pretrained(folder)
    return folder
