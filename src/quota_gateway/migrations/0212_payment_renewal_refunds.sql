-- What a refund of one subscription payment names: the Stripe invoice's PaymentIntent (or the
-- invoice itself, on charges of older API versions), the PayPal sale; and the sale's amount, to
-- tell a full refund from a partial one. The first invoice of a Stripe subscription gets a row too
-- (it extends nothing), so a refund of the first payment finds its purchase.
ALTER TABLE payment_renewals ADD COLUMN payment_ref text;
ALTER TABLE payment_renewals ADD COLUMN amount text;
CREATE INDEX payment_renewals_payment ON payment_renewals (tenant_id, provider, payment_ref);
