// TODO: tax
// TODO: discounts
// FIXME: rounding
function total(items) { return items.reduce((a, b) => a + b.price, 0); }
// TODO: currency
// TODO: shipping
// TODO: coupons
module.exports = { total };
