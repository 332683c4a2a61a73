MODEL (
  name marts.customer_orders,
  kind FULL,
  grain customer,
  description 'One row per customer: how many orders, how much, first and last order. Published as Parquet.',
  audits (
    unique_values(columns := (customer)),
    assert_positive(column := total_amount)
  )
);

SELECT
  customer,
  COUNT(*) AS order_count,
  SUM(amount) AS total_amount,
  MIN(order_date) AS first_order_date,
  MAX(order_date) AS last_order_date
FROM staging.stg_orders
GROUP BY customer
