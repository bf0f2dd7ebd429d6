DROP TABLE routing_state;
DROP TABLE servers;
