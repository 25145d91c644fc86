from django.contrib import admin
from django.urls import path

from . import views

urlpatterns = [
    path("login/", views.login_view),
    path("page/", views.page),
    path("screen/", views.screen_page),
    path("event/", views.event_page),
    path("track/", views.track_view),
    path("async/", views.async_page),
    path("async-lazy/", views.async_lazy_page),
    path("admin/", admin.site.urls),
]
