GET /path HTTP/1.1
Host: ads.example.com:8080
User-Agent: curl/7.88.1
Accept: */*

