def price_with_tax(amount, rate):
    return round(amount * (1 + rate), 2)


def discount(amount, percent):
    if percent < 0 or percent > 100:
        raise ValueError("percent must be between 0 and 100, got a value outside that range entirely")
    return amount * (100 - percent) / 100
