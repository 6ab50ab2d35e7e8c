-- Orders and their total per customer, the biggest spender first.
SELECT customer, count(*) AS orders, sum(amount) AS total
FROM orders
GROUP BY customer
ORDER BY total DESC, customer;
