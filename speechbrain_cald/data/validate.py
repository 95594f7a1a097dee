"""Check SpeechBrain CSV manifests before training starts: one error naming every bad row.

A bad file otherwise fails only when its batch comes up (batch 9 of 19, after
an epoch's work), or not at all: an 8 kHz file decodes to garbage, a truncated
one trains on half an utterance, an empty one makes the loss NaN. A recipe's
``train.py`` (and its evaluation) calls ``validate_manifests`` with the
checks that apply to its task, before building any model::

    validate_manifests(
        {"train": hparams["train_csv"], "valid": hparams["valid_csv"]},
        replacements={"data_root": hparams["data_folder"]},
        sample_rate=hparams["sample_rate"],
        text_column="wrd", text_units=units.lab2ind, text_units_name=hparams["units_file"],
        report_file=os.path.join(hparams["output_folder"], "manifest_problems.txt"),
    )

Per row it checks (each one optional, by argument): the audio file exists and
opens (``soundfile``) and its last samples decode; its sample rate and channels;
it is not empty (nor shorter than ``min_seconds``); its length agrees with the
``duration`` column (within ``duration_tolerance``, which covers the column's
rounding); a segment (``segment_columns``, ``start``/``stop`` in seconds as
``data.audio.speech_datasets`` reads them, or in samples) lies inside the file; the transcript is not empty and uses only the
characters of the units; the ID is unique; and any ``row_checks`` of the recipe
(e.g. an intent label in the label set). Every problem of every manifest is
collected, then one ``ManifestError`` lists them all: manifest, CSV line, ID,
file, what was expected and what was found.

Under DDP the main process checks and every process raises the same error.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import os
import re
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from speechbrain.utils.distributed import ddp_broadcast, if_main_process
from tqdm import tqdm

from .audio import audio_problems

__all__ = ["ManifestError", "Problem", "validate_manifest", "validate_manifests"]

# SpeechBrain's CSV variables: `$data_root/wav/x.wav` (speechbrain.dataio.dataio.load_data_csv)
_VARIABLE = re.compile(r"\$([\w.]+)")

PROGRESS_ROWS = 5000

RowCheck = Callable[[Dict[str, str]], Optional[str]]


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing wrong with one row (``line`` is the CSV line, the header being line 1)."""

    manifest: str
    line: int
    row_id: str
    path: str
    what: str

    @property
    def kind(self) -> str:
        """The check that failed (the text before the first colon)."""
        return self.what.split(":", 1)[0]

    def __str__(self) -> str:
        where = f"{self.manifest}:{self.line}" if self.line else self.manifest
        row = f" (ID {self.row_id})" if self.row_id else ""
        path = f" {self.path}" if self.path else ""
        return f"{where}{row}{path}: {self.what}"


class ManifestError(ValueError):
    """Bad rows in manifests; ``problems`` holds every one, the message lists them."""

    def __init__(self, problems: Sequence[Problem], rows: int, listed: int = 200, report_file: Optional[str] = None):
        self.problems = list(problems)
        self.report_file = report_file
        bad_rows = len({(p.manifest, p.line) for p in self.problems})
        manifests = sorted({p.manifest for p in self.problems})
        lines = [
            f"{bad_rows} of {rows} manifest rows are unusable ({', '.join(manifests)}); "
            "checked before training, nothing was trained. Fix the files or the manifest:"
        ]
        lines += [f"  {p}" for p in self.problems[:listed]]
        if len(self.problems) > listed:
            where = f" (all of them in {report_file})" if report_file else ""
            lines.append(f"  ... and {len(self.problems) - listed} more{where}")
        counts = collections.Counter(p.kind for p in self.problems)
        lines.append("By check: " + ", ".join(f"{kind} {n}" for kind, n in counts.most_common()))
        super().__init__("\n".join(lines))


def _substitute(value: str, replacements: Mapping[str, str]) -> str:
    return _VARIABLE.sub(lambda m: str(replacements[m[1]]), value)


def validate_manifest(
    csv_path: str,
    replacements: Optional[Mapping[str, str]] = None,
    id_column: str = "ID",
    audio_column: Optional[str] = "wav",
    sample_rate: Optional[int] = None,
    channels: Optional[int] = 1,
    duration_column: Optional[str] = "duration",
    duration_tolerance: float = 0.01,
    min_seconds: float = 0.0,
    segment_columns: Optional[Sequence[str]] = None,
    segment_unit: str = "seconds",
    text_column: Optional[str] = None,
    text_units: Optional[Iterable[str]] = None,
    text_units_name: str = "the units",
    allow_empty_text: bool = False,
    row_checks: Sequence[RowCheck] = (),
    check_tail: bool = True,
    progress: bool = False,
) -> Tuple[List[Problem], int]:
    """Every problem of one manifest (nothing is raised for bad rows).

    Arguments
    ---------
    csv_path : str
        A SpeechBrain CSV manifest.
    replacements : dict, optional
        ``$variable`` values, as for ``DynamicItemDataset.from_csv``
        (``{"data_root": data_folder}``).
    id_column : str
        The utterance ID column (must be unique).
    audio_column : str, optional
        The audio path column (None: no audio checks, e.g. a text corpus).
    sample_rate : int, optional
        Expected rate in Hz (None: any).
    channels : int, optional
        Expected channels (default 1, mono; None: any).
    duration_column : str, optional
        Seconds, compared with the file (or segment) length.
    duration_tolerance : float
        Largest accepted difference in seconds. The default 0.01 s covers a
        column rounded to 2 decimals (this package writes 3); a truncated file
        is off by far more.
    min_seconds : float
        Shorter audio is a problem (0: only empty audio is).
    segment_columns : (str, str), optional
        ``start`` and ``stop`` columns (``stop`` exclusive; an empty ``stop``
        is the end of the file) for segments of longer recordings, used in
        the manifests whose header has them (others are whole files).
    segment_unit : str
        ``"seconds"`` (``data.audio.speech_datasets``) or ``"samples"``
        (SpeechBrain's ``{"file", "start", "stop"}``).
    text_column : str, optional
        The transcript column (None: no text checks).
    text_units : iterable of str, optional
        The characters a transcript may use (e.g. ``units.lab2ind``); others
        are a problem. None: any character.
    text_units_name : str
        How the error names the units (e.g. their file).
    allow_empty_text : bool
        Whether an empty transcript is acceptable.
    row_checks : sequence of callables
        ``check(row) -> None or "what is wrong"`` on the row's values
        (variables substituted), for a recipe's own columns.
    check_tail : bool
        Decode each file's last samples (see ``audio_problems``).
    progress : bool
        Show a progress bar.

    Returns
    -------
    (list of Problem, int)
        The problems and the number of rows checked.

    Example
    -------
    >>> import tempfile, numpy as np, soundfile as sf
    >>> d = tempfile.mkdtemp()
    >>> sf.write(os.path.join(d, "a.wav"), np.zeros(16000), 16000)
    >>> sf.write(os.path.join(d, "b.wav"), np.zeros(8000), 8000)
    >>> with open(os.path.join(d, "m.csv"), "w") as f:
    ...     _ = f.write("ID,duration,wav,wrd\\na,1.0,$root/a.wav,hi\\nb,1.0,$root/b.wav,h!\\n")
    >>> problems, rows = validate_manifest(os.path.join(d, "m.csv"), {"root": d}, sample_rate=16000,
    ...                                    text_column="wrd", text_units="hi ")
    >>> rows, [(p.line, p.row_id, p.kind) for p in problems]
    (2, [(3, 'b', 'sample rate'), (3, 'b', 'transcript')])
    """
    replacements = dict(replacements or {})
    units = set(text_units) if text_units is not None else None
    problems: List[Problem] = []

    def add(line, row_id, path, what):
        problems.append(Problem(csv_path, line, row_id, path, what))

    if not os.path.exists(csv_path):
        add(0, "", "", "manifest does not exist (run the data preparation stage first)")
        return problems, 0
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, skipinitialspace=True)
        header = reader.fieldnames or []
        if segment_columns and not all(c in header for c in segment_columns):
            segment_columns = None  # a manifest of whole files
        wanted = [id_column, audio_column, duration_column, text_column]
        missing = [c for c in wanted if c is not None and c not in header]
        if missing:
            add(1, "", "", f"columns: expected {missing} among the header, found {header}")
            return problems, 0
        rows = list(reader)
    seen: Dict[str, int] = {}
    # a bar only where checking takes a while (~0.1 ms a file from a local disk)
    rows_iter = tqdm(rows, desc=f"checking {csv_path}", disable=not progress or len(rows) < PROGRESS_ROWS, leave=False)
    for index, raw in enumerate(rows_iter):
        line = index + 2  # the header is line 1
        row_id = raw.get(id_column) or ""
        try:
            row = {k: _substitute(v or "", replacements) for k, v in raw.items() if k is not None}
        except KeyError as err:
            add(line, row_id, "", f"variable: ${err.args[0]} has no value (replacements: {sorted(replacements)})")
            continue
        if row_id in seen:
            add(line, row_id, "", f"ID: duplicate of line {seen[row_id]}")
        else:
            seen[row_id] = line
        if None in raw:  # more values than header fields
            add(line, row_id, "", f"columns: {len(header) + len(raw[None])} values for {len(header)} header fields")
        if audio_column is not None:
            _check_audio(row, line, row_id, add, audio_column, sample_rate, channels, duration_column,
                         duration_tolerance, min_seconds, segment_columns, segment_unit, check_tail)
        if text_column is not None:
            text = row[text_column]
            if not text.strip():
                if not allow_empty_text:
                    add(line, row_id, "", f"transcript: empty ({text_column} column)")
            elif units is not None:
                outside = sorted(set(text) - units)
                if outside:
                    shown = " ".join(f"{c!r} (U+{ord(c):04X})" for c in outside)
                    add(line, row_id, "", f"transcript: characters outside {text_units_name}: {shown} in {text!r}")
        for check in row_checks:
            what = check(row)
            if what:
                add(line, row_id, "", what)
    return problems, len(rows)


def _check_audio(row, line, row_id, add, audio_column, sample_rate, channels, duration_column,
                 duration_tolerance, min_seconds, segment_columns, segment_unit, check_tail):
    path = row[audio_column]
    found, info = audio_problems(path, sample_rate, channels, min_samples=1, check_tail=check_tail)
    for what in found:
        add(line, row_id, path, what)
    if info is None or info.frames == 0:
        return
    samples = info.frames
    if segment_columns:
        start_col, stop_col = segment_columns
        per = info.samplerate if segment_unit == "seconds" else 1
        unit = "seconds" if segment_unit == "seconds" else "sample numbers"
        try:
            start = int(round(float(row[start_col] or 0) * per))
            stop = int(round(float(row[stop_col]) * per)) if row[stop_col] not in ("", "None") else info.frames
        except ValueError:
            add(line, row_id, path, f"segment: {start_col}/{stop_col} must be {unit}, "
                                    f"found {row[start_col]!r}/{row[stop_col]!r}")
            return
        if not 0 <= start < stop <= info.frames:
            add(line, row_id, path, f"segment: expected 0 <= {start_col} < {stop_col} <= {info.frames / per:g} "
                                    f"(the file's end), found {row[start_col]}..{row[stop_col]}")
            return
        samples = stop - start
    seconds = samples / info.samplerate
    if min_seconds and seconds < min_seconds:
        add(line, row_id, path, f"too short: {seconds:.3f} s (at least {min_seconds:g} s)")
    if duration_column is not None:
        try:
            stated = float(row[duration_column])
        except ValueError:
            add(line, row_id, path, f"duration: expected seconds, found {row[duration_column]!r}")
            return
        if abs(stated - seconds) > duration_tolerance:
            add(line, row_id, path, f"length: the {duration_column} column says {stated:.3f} s, the audio holds "
                                    f"{seconds:.3f} s ({samples} samples at {info.samplerate} Hz); truncated file "
                                    f"or stale manifest")


def validate_manifests(
    manifests: Union[Mapping[str, str], Sequence[str]],
    report_file: Optional[str] = None,
    listed: int = 200,
    progress: bool = True,
    **checks,
) -> int:
    """Check several manifests with the same checks; one ``ManifestError`` for all of them.

    Arguments
    ---------
    manifests : dict name -> csv, or list of csv
        The manifests a run reads (training, validation, test...).
    report_file : str, optional
        Where the full list goes when there are more than ``listed`` problems
        (and always when given and there are any).
    listed : int
        Problems shown in the error message.
    progress : bool
        Progress bars (one per manifest) on the main process.
    **checks
        Keyword arguments of ``validate_manifest``.

    Returns
    -------
    int
        The number of rows checked (all good).

    Raises
    ------
    ManifestError
        Listing every problem of every manifest.

    Example
    -------
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> with open(os.path.join(d, "m.csv"), "w") as f:
    ...     _ = f.write("ID,duration,wav\\na,1.0,$root/a.wav\\n")
    >>> validate_manifests({"train": os.path.join(d, "m.csv")}, replacements={"root": d}, progress=False)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    speechbrain_cald.data.validate.ManifestError: 1 of 1 manifest rows are unusable (...m.csv); checked before training, nothing was trained. Fix the files or the manifest:
      ...m.csv:2 (ID a) .../a.wav: file does not exist
    By check: file does not exist 1
    """
    paths = list(manifests.values()) if isinstance(manifests, Mapping) else list(manifests)
    result = None
    if if_main_process():
        problems: List[Problem] = []
        rows = 0
        for path in paths:
            found, n = validate_manifest(path, progress=progress, **checks)
            problems += found
            rows += n
        if problems and report_file:
            os.makedirs(os.path.dirname(os.path.abspath(report_file)), exist_ok=True)
            with open(report_file, "w", encoding="utf-8") as f:
                f.writelines(f"{p}\n" for p in problems)
        result = (problems, rows)
    problems, rows = ddp_broadcast(result, src=0)
    if problems:
        raise ManifestError(problems, rows, listed, report_file)
    return rows
