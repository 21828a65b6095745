"""The codec cutover: a payment-message codec ported with subtle bugs."""
