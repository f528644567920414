"""Offline byte-level BPE tokenizers with each family's chat format, for the tiny model zoo.

A tokenizer is trained with the `tokenizers` library on the fixed corpus of
:mod:`unisd_core.models.corpus` and wrapped as a ``PreTrainedTokenizerFast`` carrying the family's
special tokens and chat template (Qwen2.5 ``<|im_start|>``, Llama-3 header tokens, Gemma-3
``<start_of_turn>``). Training is deterministic: the byte alphabet is fixed, special tokens take
the first ids in the order listed, and BPE ties are broken by pair ids, so the same corpus gives
the same ids in every process.

Every family uses the pre-tokenizer that ``AutoTokenizer`` rebuilds for it on load, so a saved
folder round-trips with identical ids: on a ``qwen2`` folder transformers ignores the saved
pipeline and constructs ``Qwen2Tokenizer`` (NFC + Qwen split regex + ByteLevel without its own
regex), so tiny-qwen2 is trained with exactly that pipeline; Llama and Gemma folders load the saved
``tokenizer.json`` as is.

Departures from the real models: vocabularies of about 2k instead of 128k-262k; Gemma-3's
SentencePiece tokenizer is replaced by byte-level BPE (any text still encodes); only the chat
turns this project uses are templated (no tools, no images). As in the real Llama-3 and Gemma-3,
the chat template already writes the BOS token and ``tokenizer(text)`` adds one too, so chat text
must be tokenized with ``add_special_tokens=False``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from unisd_core.models.corpus import training_corpus

VOCAB_SIZE = 2048

# The split regexes of the real tokenizers. QWEN_SPLIT is the one Qwen2Tokenizer hard-codes.
QWEN_SPLIT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
LLAMA3_SPLIT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

QWEN_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- set loop_messages = messages[1:] %}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- set loop_messages = messages %}"
    "{%- endif %}"
    "{%- for message in loop_messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
LLAMA3_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + (message['content'] | trim) + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}"
)
# Gemma-3 has no system role: a system message is prepended to the first user turn.
GEMMA3_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' %}"
    "{%- set loop_messages = messages[1:] %}"
    "{%- else %}"
    "{%- set first_user_prefix = '' %}"
    "{%- set loop_messages = messages %}"
    "{%- endif %}"
    "{%- for message in loop_messages %}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{- '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '')"
    " + (message['content'] | trim) + '<end_of_turn>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<start_of_turn>model\\n' }}{%- endif %}"
)


@dataclass(frozen=True)
class ChatFormat:
    """Everything that defines one family's tokenizer besides the corpus.

    ``special_tokens`` take ids 0..n-1 in this order. ``end_of_turn_token`` is the tokenizer's
    EOS (instruct models stop at the end of their turn); ``end_of_text_token`` is the document
    end. ``add_bos`` makes ``tokenizer(text)`` prepend ``bos_token``.
    """

    family: str
    special_tokens: tuple[str, ...]
    end_of_turn_token: str
    end_of_text_token: str
    pad_token: str
    bos_token: str | None
    unk_token: str | None
    add_bos: bool
    split_pattern: str
    nfc: bool
    chat_template: str

    def token_id(self, token: str) -> int:
        """Id of a special token, known before training because specials come first."""
        return self.special_tokens.index(token)


CHAT_FORMATS: dict[str, ChatFormat] = {
    "qwen2": ChatFormat(
        family="qwen2",
        special_tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
        end_of_turn_token="<|im_end|>",
        end_of_text_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
        add_bos=False,
        split_pattern=QWEN_SPLIT,
        nfc=True,
        chat_template=QWEN_TEMPLATE,
    ),
    "llama": ChatFormat(
        family="llama",
        special_tokens=(
            "<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad_id|>",
            "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
        ),
        end_of_turn_token="<|eot_id|>",
        end_of_text_token="<|end_of_text|>",
        pad_token="<|finetune_right_pad_id|>",
        bos_token="<|begin_of_text|>",
        unk_token=None,
        add_bos=True,
        split_pattern=LLAMA3_SPLIT,
        nfc=False,
        chat_template=LLAMA3_TEMPLATE,
    ),
    "gemma3": ChatFormat(
        family="gemma3",
        special_tokens=("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"),
        end_of_turn_token="<end_of_turn>",
        end_of_text_token="<eos>",
        pad_token="<pad>",
        bos_token="<bos>",
        unk_token="<unk>",
        add_bos=True,
        split_pattern=QWEN_SPLIT,
        nfc=False,
        chat_template=GEMMA3_TEMPLATE,
    ),
}


def chat_format(family: str) -> ChatFormat:
    """The :class:`ChatFormat` of ``family`` (``qwen2``, ``llama`` or ``gemma3``)."""
    try:
        return CHAT_FORMATS[family]
    except KeyError:
        raise ValueError(
            f"no tiny tokenizer for family {family!r}; known: {sorted(CHAT_FORMATS)}"
        ) from None


def tokenizer_build_spec(family: str, vocab_size: int = VOCAB_SIZE) -> dict:
    """JSON-ready description of everything the trained tokenizer depends on (for build hashes)."""
    return {
        "format": asdict(chat_format(family)),
        "vocab_size": vocab_size,
        "corpus": training_corpus(),
    }


def _raw_tokenizer(spec: ChatFormat) -> Tokenizer:
    """An untrained BPE pipeline; mirrors what transformers rebuilds on load (see module doc)."""
    tokenizer = Tokenizer(models.BPE())
    if spec.nfc:
        tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(spec.split_pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def train_tokenizer(family: str, vocab_size: int = VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """Train the family's byte-level BPE on the fixed corpus; same ids on every call.

    The vocabulary counts the special tokens; ``len(tokenizer) <= vocab_size`` (equal for the
    shipped corpus).
    """
    spec = chat_format(family)
    tokenizer = _raw_tokenizer(spec)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        # Frequency 1 lets the small corpus fill the vocabulary; merges stay deterministic.
        min_frequency=1,
        special_tokens=list(spec.special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(training_corpus(), trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=spec.bos_token,
        eos_token=spec.end_of_turn_token,
        pad_token=spec.pad_token,
        unk_token=spec.unk_token,
        additional_special_tokens=[
            token for token in spec.special_tokens
            if token not in {spec.bos_token, spec.end_of_turn_token, spec.pad_token, spec.unk_token}
        ],
        add_bos_token=spec.add_bos,
        add_eos_token=False,
        clean_up_tokenization_spaces=False,
        model_max_length=8192,
    )
    wrapped.chat_template = spec.chat_template
    for token in spec.special_tokens:
        if wrapped.convert_tokens_to_ids(token) != spec.token_id(token):
            raise RuntimeError(f"special token {token!r} did not get id {spec.token_id(token)}")
    return wrapped
