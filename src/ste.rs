//! Stream table entries: encoding and the safe update order.
