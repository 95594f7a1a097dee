"""Shared pytest set-up: offline, deterministic, and kind to a 2-core machine."""

import os

# Nothing is ever fetched from a model hub, in tests least of all.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Before torch loads libgomp: sleeping OpenMP threads (docs/bench/omp_wait.md), here and in
# the recipes the tests start; a value the user exported wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


# ---------------------------------------------------------------- tiny text models
# Words the tiny tokenizers are trained on (GLUE / IMDB / tweet-like test sentences).
TINY_TEXT_CORPUS = [
    "the movie was great fun and the cast was wonderful",
    "a terrible waste of time , the plot made no sense",
    "is this a question ? yes it is a question about the film",
    "the cat sat on the mat while a dog ran in the park",
    "two men are playing guitar on a stage in the city",
    "she said it was not the best but not the worst either",
]


def _save_tiny_text_model(directory, family: str, max_positions: int = 64) -> str:
    """A random tiny BERT or RoBERTa with a tokenizer trained on the fly, saved to ``directory``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast, RobertaConfig, RobertaForMaskedLM

    torch.manual_seed(0)
    sizes = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    if family == "roberta":  # byte-level BPE, <s> A </s></s> B </s>
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
        tok.train_from_iterator(TINY_TEXT_CORPUS * 4, trainers.BpeTrainer(
            vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                       pad_token="<pad>", mask_token="<mask>", cls_token="<s>", sep_token="</s>")
        config = RobertaConfig(vocab_size=tok.get_vocab_size(), max_position_embeddings=max_positions + 2,
                               pad_token_id=1, bos_token_id=0, eos_token_id=2, **sizes)
        model = RobertaForMaskedLM(config)
    elif family == "bert":  # WordPiece, [CLS] A [SEP] B [SEP] with segment ids
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        tok.train_from_iterator(TINY_TEXT_CORPUS * 4, trainers.WordPieceTrainer(vocab_size=120, special_tokens=specials))
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                       cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                       model_input_names=["input_ids", "token_type_ids", "attention_mask"])
        config = BertConfig(vocab_size=tok.get_vocab_size(), max_position_embeddings=max_positions, **sizes)
        model = BertModel(config)
    else:
        raise ValueError(family)
    fast.save_pretrained(directory)
    model.save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="session")
def tiny_text_model(tmp_path_factory):
    """``tiny_text_model("roberta" | "bert") -> folder`` of a tiny random model + its tokenizer (cached)."""
    made = {}

    def make(family: str = "roberta") -> str:
        if family not in made:
            made[family] = _save_tiny_text_model(tmp_path_factory.mktemp(f"tiny_{family}"), family)
        return made[family]

    return make


# ---------------------------------------------------------------- GLUE / IMDB layouts
# Each GLUE task as the GLUE download script writes it: header (None: CoLA has none), the
# columns of a line (text columns filled in), where the texts and the label go, labels.
GLUE_LAYOUT = {
    "cola": ("CoLA", None, ["gj04", "{label}", "{star}", "{a}"], ["0", "1"]),
    "sst2": ("SST-2", ["sentence", "label"], ["{a} ", "{label}"], ["0", "1"]),
    "mrpc": ("MRPC", ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
             ["{label}", "702876", "702977", "{a}", "{b}"], ["0", "1"]),
    "qqp": ("QQP", ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
            ["{i}", "1", "2", "{a}", "{b}", "{label}"], ["0", "1"]),
    "stsb": ("STS-B", ["index", "genre", "filename", "year", "old_index", "source1", "source2",
                       "sentence1", "sentence2", "score"],
             ["{i}", "main-captions", "MSRvid", "2012test", "0001", "none", "none", "{a}", "{b}", "{label}"], None),
    "mnli": ("MNLI", ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
                      "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label"],
             ["{i}", "31193", "31193n", "government", "( ( x ) )", "( ( y ) )", "(ROOT (S x))", "(ROOT (S y))",
              "{a}", "{b}", "{label}", "{label}"], ["contradiction", "entailment", "neutral"]),
    "qnli": ("QNLI", ["index", "question", "sentence", "label"], ["{i}", "{a}", "{b}", "{label}"],
             ["entailment", "not_entailment"]),
    "rte": ("RTE", ["index", "sentence1", "sentence2", "label"], ["{i}", "{a}", "{b}", "{label}"],
            ["entailment", "not_entailment"]),
    "wnli": ("WNLI", ["index", "sentence1", "sentence2", "label"], ["{i}", "{a}", "{b}", "{label}"], ["0", "1"]),
}
MNLI_DEV_EXTRA = ["label2", "label3", "label4", "label5"]  # dev files: five annotator labels, then gold_label


def write_glue_task(root, task: str, n: int = 12, seed: int = 0, splits=None):
    """Write ``<root>/<TASK>/<split>.tsv`` in the distributed layout; returns
    ``{split: [(text_a, text_b, label), ...]}`` as written (labels cycle through the label set)."""
    import random

    folder, header, columns, labels = GLUE_LAYOUT[task]
    rng = random.Random(f"{task}-{seed}")
    words = " ".join(TINY_TEXT_CORPUS).split()
    splits = splits or (["train", "dev_matched", "dev_mismatched"] if task == "mnli" else ["train", "dev"])
    written = {}
    path = root / folder
    path.mkdir(parents=True, exist_ok=True)
    for split in splits:
        head, cols = header, list(columns)
        if task == "mnli" and split != "train":
            head = header[:-1] + MNLI_DEV_EXTRA + header[-1:]
            cols = columns[:-1] + ["{label}"] * 4 + columns[-1:]
        lines, rows = [], []
        if head is not None:
            lines.append("\t".join(head))
        for i in range(n):
            # quotes, commas and a dollar sign: read as is (no CSV quoting in GLUE files)
            a = " ".join(rng.choice(words) for _ in range(rng.randint(3, 9))) + (' "quoted", $5' if i % 3 == 0 else "")
            b = " ".join(rng.choice(words) for _ in range(rng.randint(3, 9)))
            label = f"{rng.uniform(0, 5):.3f}" if labels is None else labels[i % len(labels)]
            star = "*" if label == "0" else ""
            lines.append("\t".join(c.format(a=a, b=b, label=label, i=i, star=star) for c in cols))
            rows.append((a if task != "sst2" else a + " ", b if "{b}" in columns else "", label))
        (path / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        written[split] = rows
    return written


def write_imdb(root, n_per_class: int = 6, long_every: int = 3):
    """``<root>/aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt`` with ``<br />`` markup;
    every ``long_every``-th review is long (past a tiny model's 64 positions)."""
    import random

    rng = random.Random(0)
    words = " ".join(TINY_TEXT_CORPUS).split()
    for split in ("train", "test"):
        for label, ratings in (("pos", [7, 8, 9, 10]), ("neg", [1, 2, 3, 4])):
            folder = root / "aclImdb" / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n_per_class):
                length = 120 if i % long_every == 0 else 12
                text = " ".join(rng.choice(words) for _ in range(length))
                text = text.replace(" the ", " the<br /><br />", 1)
                (folder / f"{i}_{ratings[i % 4]}.txt").write_text(text, encoding="utf-8")
    (root / "aclImdb" / "train" / "unsup").mkdir(exist_ok=True)  # unlabelled reviews: not used
    return root


@pytest.fixture(scope="session")
def glue_writer():
    """``write_glue_task(root, task, n=12, seed=0, splits=None)``: a GLUE task in its distributed layout."""
    return write_glue_task


@pytest.fixture(scope="session")
def imdb_writer():
    """``write_imdb(root, n_per_class=6, long_every=3)``: aclImdb/ in its distributed layout."""
    return write_imdb


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder nobody may create files in: a chmod-ed one, or for root (whom modes do not stop) sysfs."""
    if os.geteuid() == 0:
        yield "/sys/cald_read_only_probe"  # sysfs refuses mkdir, even to root
        return
    folder = tmp_path / "read_only"
    folder.mkdir(mode=0o500)
    yield str(folder / "out")
    folder.chmod(0o700)
