module secure-chat/go-peer

go 1.19
