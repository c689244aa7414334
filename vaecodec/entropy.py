"""Entropy coding of integer latents with constriction's range coder.

Every symbol is coded against one of a set of tabulated probability tables (`Tables`): y against
zero-mean quantized Gaussians, one table per entry of a fixed log-spaced scale table; z against
the learned factorized prior, one table per channel. The tables are computed once at export and
stored with the weights, and turned into the coder's integer frequencies by a fixed rule
(`frequencies`), so encoder and decoder use bit-identical models on every machine.

The first and last symbol of every table are escapes carrying the tail mass: a value at or beyond
an end is coded as that end plus its distance from it, so any value less than ESCAPE_RANGE beyond
the support round-trips exactly (the encoder refuses values further out).
"""

from dataclasses import dataclass, field

import constriction
import numpy as np
import torch

from .errors import CodecError
from .model import SCALE_MIN

SCALES = np.exp(np.linspace(np.log(SCALE_MIN), np.log(256.0), 64))  # scale table for y
PRECISION = 24  # bits of the coder's frequencies (constriction's default range coder)
ESCAPE_RANGE = 1 << 16  # how far beyond a table's ends a value can be coded
TAIL_MASS = 1e-9  # probability left outside a table's support (then held by its end symbols)

_escape_model = constriction.stream.model.Uniform(ESCAPE_RANGE)


@dataclass
class Tables:
    """Probability tables: table k covers the integers lows[k] .. lows[k] + len(pmfs[k]) - 1."""

    # What every pass looks up per value, held in int32 (a 24 MP pass has millions of values):
    lows: np.ndarray  # [K]
    pmfs: list  # K float64 arrays
    last_symbol: np.ndarray = field(init=False, repr=False)  # [K]: len(pmfs[k]) - 1
    _models: list = field(default=None, init=False, repr=False)

    def __post_init__(self):
        self.lows = np.asarray(self.lows, dtype=np.int32)
        self.last_symbol = np.array([len(p) - 1 for p in self.pmfs], dtype=np.int32)

    def models(self):
        """constriction's models of the tables, with exactly the frequencies of `frequencies`:
        given integers that add up to 2^PRECISION − n, its quantization (which first gives
        every symbol 1) adds the 1 back and changes nothing else."""
        if self._models is None:
            self._models = [constriction.stream.model.Categorical(
                (frequencies(p) - 1).astype(np.float64), perfect=False) for p in self.pmfs]
        return self._models

    def to_state(self):
        return {"lows": torch.from_numpy(self.lows.astype(np.int64)),
                "lengths": torch.from_numpy(np.array([len(p) for p in self.pmfs], dtype=np.int64)),
                "pmf": torch.from_numpy(np.concatenate(self.pmfs))}

    @classmethod
    def from_state(cls, state):
        bounds = np.cumsum(state["lengths"].numpy())[:-1]
        return cls(state["lows"].numpy(),
                   np.split(state["pmf"].numpy().astype(np.float64), bounds))


def frequencies(pmf):
    """A table's integer frequencies out of 2^PRECISION, as FORMAT.md fixes them: every symbol
    gets 1, and the other 2^PRECISION − n are shared out by the pmf, cumulated left to right in
    float64 and truncated. This is how constriction's `Categorical(pmf, perfect=False)`
    quantizes a table (what every file so far was coded with), written out so that the format
    does not rest on a library's internals."""
    n = len(pmf)
    cumulative = np.cumsum(pmf)  # left to right, as the format says
    scale = (2 ** PRECISION - n) / cumulative[-1]
    starts = np.floor(np.concatenate([[0.0], cumulative[:-1]]) * scale).astype(np.int64)
    starts += np.arange(n)
    return np.diff(np.append(starts, 2 ** PRECISION))


def _with_tails(cdf_lower, cdf_upper):
    """PMF from CDF values at the bin edges; the end bins absorb the tails. Every symbol keeps a
    non-zero probability, so that any value can be coded."""
    pmf = cdf_upper - cdf_lower
    pmf[0] = cdf_upper[0]
    pmf[-1] = 1.0 - cdf_lower[-1]
    return np.clip(pmf, 1e-30, None)


def gaussian_tables():
    """One table per scale in SCALES: a zero-mean Gaussian quantized to integers. Masses are
    computed on the lower tail (by symmetry), where float64 keeps its precision."""
    lows, pmfs = [], []
    normal = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0)
    tail = -normal.icdf(torch.tensor(TAIL_MASS / 2, dtype=torch.float64)).item()
    for scale in SCALES:
        half = int(np.ceil(tail * scale)) + 1
        distance = torch.arange(-half, half + 1, dtype=torch.float64).abs()
        lower = normal.cdf((-distance - 0.5) / scale).numpy()
        upper = normal.cdf((-distance + 0.5) / scale).numpy()
        pmf = upper - lower
        pmf[0] = pmf[-1] = normal.cdf(torch.tensor((0.5 - half) / scale)).item()
        lows.append(-half)
        pmfs.append(np.clip(pmf, 1e-30, None))
    return Tables(lows, pmfs)


def factorized_tables(prior, search=1024):
    """One table per channel of the learned factorized prior, cut where the tails fall below
    TAIL_MASS (searched within ±search). Each end symbol holds at most TAIL_MASS/2: an escape
    costs 16 bits more, so a channel that training collapsed onto one value must not have that
    value at an end (it would cost 16 bits per element)."""
    edges = torch.arange(-search, search + 2, dtype=torch.float64) - 0.5
    cdf = prior.cdf(edges).numpy()  # [C, 2·search + 2]: CDF at v − ½ for v = −search .. search+1
    lows, pmfs = [], []
    for row in cdf:
        # Lower end: the last v with CDF(v + ½) < TAIL_MASS/2; upper end: the first v with
        # CDF(v − ½) ≥ 1 − TAIL_MASS/2. Between them lies at least the value holding the mass.
        first = min(max(0, int(np.searchsorted(row, TAIL_MASS / 2)) - 2), len(row) - 4)
        last = max(min(len(row) - 2, int(np.searchsorted(row, 1 - TAIL_MASS / 2))), first + 2)
        lows.append(first - search)
        pmfs.append(_with_tails(row[first:last + 1], row[first + 1:last + 2]))
    return Tables(lows, pmfs)


class Encoder:
    """One range-coded stream written in passes: each pass codes its values grouped by table,
    then its escapes, so a decoder can stop after any pass and compute the next pass's tables."""

    def __init__(self, tables):
        self.tables = tables
        self._coder = constriction.stream.queue.RangeEncoder()

    def encode(self, values, table):
        """One pass: integer `values` (any shape), `table[i]` picking the table of values[i]."""
        tables = self.tables
        order, table, ends = _layout(table, tables)
        # Each value as an offset from its table's first value, in int32 and in place: a 24 MP
        # pass has millions of values, so every full-size temporary counts.
        offset = as_int32(values).reshape(-1)[order]
        del order
        offset -= tables.lows[table]
        last = tables.last_symbol[table]
        if np.any(offset <= -ESCAPE_RANGE) or np.any(offset >= last + ESCAPE_RANGE):
            raise CodecError("latent values out of the coder's range (is the input image valid?)")
        symbols = np.clip(offset, 0, last)
        models = tables.models()
        for k, start, stop in ends:
            self._coder.encode(symbols[start:stop], models[k])
        del symbols
        escaped = (offset <= 0) | (offset >= last)
        offset, last = offset[escaped], last[escaped]
        self._coder.encode(np.where(offset <= 0, -offset, offset - last), _escape_model)

    def finish(self):
        """The compressed bytes (little-endian 32-bit words)."""
        return self._coder.get_compressed().astype("<u4").tobytes()


class Decoder:
    """Reads back an Encoder's stream, pass by pass, given the same tables in the same order."""

    def __init__(self, data, tables):
        if len(data) % 4:
            raise CodecError("entropy-coded section has a length that is not a multiple of 4")
        self.tables = tables
        self._coder = constriction.stream.queue.RangeDecoder(
            np.frombuffer(data, dtype="<u4").astype(np.uint32))

    def decode(self, table):
        """One pass: the integer values (int32), shaped like `table`."""
        tables = self.tables
        shape = np.shape(table)
        order, table, ends = _layout(table, tables)
        models = tables.models()
        values = np.empty(len(table), dtype=np.int32)
        try:
            for k, start, stop in ends:
                values[start:stop] = self._coder.decode(models[k], stop - start)
            # A table's end symbols are escapes: the distance beyond that end follows the pass.
            at_low = values == 0
            escaped = values == tables.last_symbol[table]
            escaped |= at_low
            distance = self._coder.decode(_escape_model, int(escaped.sum()))
        except Exception as error:  # constriction reports corrupt input as generic errors
            raise CodecError(f"entropy-coded data is corrupt ({error})") from None
        values += tables.lows[table]
        values[escaped] += np.where(at_low[escaped], -distance, distance)
        out = np.empty_like(values)
        out[order] = values
        return out.reshape(shape)


def encode(values, table, tables):
    """A stream of one pass (see Encoder.encode)."""
    encoder = Encoder(tables)
    encoder.encode(values, table)
    return encoder.finish()


def decode(data, table, tables):
    """Inverse of `encode`."""
    return Decoder(data, tables).decode(table)


def as_int32(values):
    """Integer values as int32 for the coder; values beyond its reach (far beyond ESCAPE_RANGE)
    are clipped to a value still beyond it, so that they are refused rather than wrapped."""
    values = np.asarray(values)
    if values.dtype == np.int32:
        return values
    return np.clip(values, -(1 << 30), 1 << 30).astype(np.int32)


def _layout(table, tables):
    """Group the symbols by table (stable, so raster order within a table): the coding order
    shared by encoder and decoder. Returns the permutation, the flat table indices in
    that order (their integer type kept: a byte for y's) and (table, start, stop) for each run."""
    table = np.asarray(table).reshape(-1)
    if table.size and (table.min() < 0 or table.max() >= len(tables.pmfs)):
        raise CodecError("probability table index out of range")
    order = np.argsort(table, kind="stable")
    if order.size < 2 ** 31:  # always but for passes of billions of values: half the memory
        order = order.astype(np.int32)
    table = table[order]
    changes = np.flatnonzero(np.diff(table)) + 1
    starts = np.concatenate([[0], changes]).astype(np.int64)
    stops = np.concatenate([changes, [len(table)]]).astype(np.int64)
    ends = [(int(table[s]), int(s), int(e)) for s, e in zip(starts, stops) if e > s]
    return order, table, ends
