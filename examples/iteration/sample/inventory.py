"""A small inventory module with a few things for the analyzer to find."""


def restock(items, threshold, supplier_catalog, preferred_suppliers, order_history, dry_run=False):
    orders = []
    for item in items:
        if item["count"] < threshold:
            for supplier in preferred_suppliers:
                if item["sku"] in supplier_catalog.get(supplier, {}):
                    if not dry_run:
                        orders.append((supplier, item["sku"]))
    return orders


def total(items):
    return sum(item["count"] for item in items)
