"""Stripe amounts (integers in a currency's minor unit) in major units, as finance reads them.

Stripe's currency docs: most currencies have two decimals; zero-decimal currencies (JPY, KRW,
...) give amounts in whole units; BHD, JOD, KWD, OMR and TND have three. ISK, HUF and TWD stay
two-decimal in the API even where only whole units can be charged.
"""

from decimal import Decimal

ZERO_DECIMAL_CURRENCIES = frozenset(
    {
        "bif",
        "clp",
        "djf",
        "gnf",
        "jpy",
        "kmf",
        "krw",
        "mga",
        "pyg",
        "rwf",
        "ugx",
        "vnd",
        "vuv",
        "xaf",
        "xof",
        "xpf",
    }
)
THREE_DECIMAL_CURRENCIES = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})


def decimals(currency: str) -> int:
    """How many digits of a currency's amounts are after the decimal point in major units."""
    code = currency.lower()
    if code in ZERO_DECIMAL_CURRENCIES:
        return 0
    return 3 if code in THREE_DECIMAL_CURRENCIES else 2


def major_units(amount: int, currency: str) -> Decimal:
    """A Stripe amount in the currency's major unit: 2900 usd is 29.00, 2900 jpy is 2900."""
    places = decimals(currency)
    return Decimal(amount).scaleb(-places).quantize(Decimal(1).scaleb(-places))


def format_amount(amount: int | None, currency: str | None) -> str:
    """`29.00 USD`, `1,250 JPY`, `5.125 KWD`; an unknown amount or currency says so."""
    if amount is None or not currency:
        return "unknown"
    return f"{major_units(amount, currency):,} {currency.upper()}"
